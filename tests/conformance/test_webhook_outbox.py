"""The webhook outbox: written in the transaction that makes a run terminal, on every such path, and
handed out to dispatchers under a lease so a killed dispatcher's deliveries are retried."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from runplane.core.models import Run
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, OpenAnother, add_run, claim, outcome, running_run

HOOK = "https://hooks.example.com/done"


def hooked(**kwargs: Any) -> dict[str, Any]:
    return {"kwargs": {"graph_id": "agent", "webhook": HOOK}, **kwargs}


async def the_delivery_of(store: Store, run: Run) -> dict[str, object]:
    [delivery] = await store.list_webhooks()
    assert (delivery.run_id, delivery.url, delivery.attempts, delivery.status) == (
        run.run_id,
        HOOK,
        0,
        "pending",
    )
    return delivery.payload


async def test_finishing_a_run_writes_its_delivery(store: Store, clock: FakeClock) -> None:
    run = await running_run(store, **hooked())
    clock.advance(3)
    finished = await store.finish_run(run.run_id, run.attempt, outcome(thread_values={"answer": 42}))
    payload = await the_delivery_of(store, finished)
    assert payload["run_id"] == run.run_id and payload["thread_id"] == run.thread_id
    assert payload["status"] == "success"
    assert payload["values"] == {"answer": 42}
    assert payload["run_started_at"] == run.started_at.isoformat() if run.started_at else False
    assert payload["run_ended_at"] == clock.now().isoformat()
    assert payload["kwargs"] == {"graph_id": "agent", "webhook": HOOK, "stream_mode": ["values"]}
    assert "error" not in payload
    assert await store.next_webhook_due() == clock.now()


async def test_a_failed_run_carries_its_error(store: Store) -> None:
    run = await running_run(store, **hooked())
    await store.finish_run(run.run_id, run.attempt, outcome("error", "error", error="ValueError: boom"))
    payload = await the_delivery_of(store, run)
    assert payload["status"] == "error"
    assert payload["error"] == {"error": "ValueError", "message": "boom"}


async def test_runs_without_webhook_write_nothing(store: Store) -> None:
    run = await running_run(store)
    await store.finish_run(run.run_id, run.attempt, outcome())
    assert await store.list_webhooks() == []
    assert await store.next_webhook_due() is None


async def test_cancelling_a_pending_run_writes_its_delivery(store: Store) -> None:
    run = await add_run(store, "r1", "t1", **hooked())
    await store.request_cancel("r1", OWNER, "interrupt")
    assert (await the_delivery_of(store, run))["status"] == "interrupted"


async def test_a_pending_run_interrupted_by_admission_writes_its_delivery(store: Store) -> None:
    await add_run(store, "running", "t1")
    await claim(store)
    queued = await add_run(store, "queued", "t1", **hooked())
    await add_run(store, "new", "t1", strategy="interrupt")
    assert (await the_delivery_of(store, queued))["status"] == "interrupted"


async def test_rollback_deletes_without_a_delivery(store: Store) -> None:
    await add_run(store, "r1", "t1", **hooked())
    await store.request_cancel("r1", OWNER, "rollback")
    assert await store.list_webhooks() == []


async def test_recovery_to_error_writes_its_delivery(store: Store, clock: FakeClock) -> None:
    run = await running_run(store, **hooked())
    clock.advance(31)
    recovered = await store.recover_run(run.run_id, run.attempt, max_attempts=1)
    assert recovered.status == "error"
    payload = await the_delivery_of(store, run)
    assert payload["status"] == "error" and payload["error"]["error"] == "WorkerLost"  # type: ignore[index]


async def test_recovery_back_to_the_queue_writes_nothing(store: Store, clock: FakeClock) -> None:
    run = await running_run(store, **hooked())
    clock.advance(31)
    await store.recover_run(run.run_id, run.attempt, max_attempts=3)
    assert await store.list_webhooks() == []


async def test_the_delivery_outlives_a_temporary_thread(store: Store) -> None:
    run = await running_run(store, **hooked())
    await store.finish_run(run.run_id, run.attempt, outcome())
    await store.delete_thread(run.thread_id, OWNER)
    assert (await the_delivery_of(store, run))["run_id"] == run.run_id


async def test_claims_lease_retry_and_give_up(store: Store, clock: FakeClock) -> None:
    run = await running_run(store, **hooked())
    await store.finish_run(run.run_id, run.attempt, outcome())
    [taken] = await store.claim_webhooks(lease_seconds=30)
    assert taken.attempts == 1
    assert await store.claim_webhooks(lease_seconds=30) == []  # hidden while claimed
    assert await store.next_webhook_due() == clock.now() + timedelta(seconds=30)
    # A dispatcher killed mid-POST: the lease runs out and another takes it.
    clock.advance(31)
    [again] = await store.claim_webhooks(lease_seconds=30)
    assert again.delivery_id == taken.delivery_id and again.attempts == 2
    await store.webhook_failed(again.delivery_id, "HTTP 503", clock.now() + timedelta(seconds=4))
    clock.advance(3)
    assert await store.claim_webhooks(lease_seconds=30) == []
    clock.advance(1)
    [third] = await store.claim_webhooks(lease_seconds=30)
    assert (third.attempts, third.last_error) == (3, "HTTP 503")
    await store.webhook_failed(third.delivery_id, "HTTP 500", None)
    [dead] = await store.list_webhooks()
    assert (dead.status, dead.last_error) == ("failed", "HTTP 500")
    clock.advance(3600)
    assert await store.claim_webhooks(lease_seconds=30) == []
    assert await store.next_webhook_due() is None


async def test_a_delivered_webhook_leaves_the_outbox(store: Store) -> None:
    run = await running_run(store, **hooked())
    await store.finish_run(run.run_id, run.attempt, outcome())
    [taken] = await store.claim_webhooks(lease_seconds=30)
    await store.webhook_delivered(taken.delivery_id)
    assert await store.list_webhooks() == []


async def test_two_dispatchers_never_claim_the_same_delivery(
    store: Store, clock: FakeClock, open_another: OpenAnother
) -> None:
    other = await open_another()
    for i in range(6):
        run = await running_run(store, f"r{i}", f"t{i}", **hooked())
        await store.finish_run(run.run_id, run.attempt, outcome())
    first = await store.claim_webhooks(lease_seconds=30, limit=4)
    second = await other.claim_webhooks(lease_seconds=30, limit=4)
    ids = [d.delivery_id for d in (*first, *second)]
    assert len(ids) == len(set(ids)) == 6
