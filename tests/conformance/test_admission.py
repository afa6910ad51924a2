"""Creating runs: the multitask strategies, if_not_exists, duplicate ids, stored fields."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runplane.core.errors import Conflict, NotFound, ThreadBusy
from runplane.core.models import MultitaskStrategy, RunFilter, TokenUsage
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import (
    OTHER,
    OWNER,
    add_run,
    claim,
    make_thread,
    new_run,
    outcome,
)


async def _statuses(store: Store, thread_id: str = "t1") -> dict[str, str]:
    return {run.run_id: run.status for run in await store.list_runs(thread_id, OWNER, RunFilter(limit=100))}


async def test_new_run_records_every_field(store: Store, clock: FakeClock) -> None:
    await make_thread(store, "t1")
    clock.advance(3)
    not_before = clock.now() + timedelta(seconds=10, microseconds=123456)
    admission = await store.create_run(
        new_run(
            "r1",
            "t1",
            assistant_id="asst",
            strategy="interrupt",
            metadata={"m": 1},
            kwargs={"input": {"x": 1}, "stream_mode": ["values"]},
            not_before=not_before,
        )
    )
    run = admission.run
    assert admission.cancel_requested == ()
    assert admission.cancelled_pending == ()
    assert admission.replayed is False
    assert (run.run_id, run.thread_id, run.assistant_id, run.owner) == ("r1", "t1", "asst", OWNER)
    assert run.status == "pending"
    assert run.multitask_strategy == "interrupt"
    assert run.created_at == run.updated_at == clock.now()
    assert run.metadata == {"m": 1}
    assert run.kwargs.to_json() == {"input": {"x": 1}, "stream_mode": ["values"]}
    assert run.not_before == not_before
    assert (run.started_at, run.ended_at, run.error, run.model_name) == (None, None, None, None)
    assert run.usage == TokenUsage()
    assert (run.attempt, run.lease_owner, run.lease_expires_at, run.cancel_action) == (0, None, None, None)
    assert run.idempotency_key is None
    assert await store.get_run("r1", OWNER) == run
    assert await store.get_run("r1", OWNER, "t1") == run
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == "busy"
    assert thread.updated_at == clock.now()


async def test_if_not_exists_create_makes_the_thread(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "fresh", if_not_exists="create")
    thread = await store.get_thread("fresh", OWNER)
    assert thread.owner == OWNER
    assert thread.status == "busy"
    assert thread.metadata == {}
    assert thread.created_at == thread.updated_at == clock.now()


async def test_admission_merges_the_thread_metadata_update(store: Store, clock: FakeClock) -> None:
    # Written by the admission itself (issue 18): no second lock of the thread after the wake-up.
    await make_thread(store, "t1", metadata={"keep": 1, "graph_id": "old"})
    clock.advance(1)
    update = {"graph_id": "g", "assistant_id": "a"}
    await add_run(store, "r1", "t1", thread_metadata_update=update)
    thread = await store.get_thread("t1", OWNER)
    assert thread.metadata == {"keep": 1, "graph_id": "g", "assistant_id": "a"}
    await add_run(
        store, "r2", "fresh", if_not_exists="create", thread_metadata={"x": 1}, thread_metadata_update=update
    )
    assert (await store.get_thread("fresh", OWNER)).metadata == {"x": 1, **update}


async def test_if_not_exists_reject_on_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await add_run(store, "r1", "missing", if_not_exists="reject")
    with pytest.raises(NotFound):
        await store.get_thread("missing", OWNER)
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)


async def test_another_owners_thread_is_not_found_even_with_create(store: Store) -> None:
    await make_thread(store, "t1", owner=OWNER)
    for if_not_exists in ("create", "reject"):
        with pytest.raises(NotFound):
            await add_run(store, "r1", "t1", owner=OTHER, if_not_exists=if_not_exists)
    assert (await store.get_thread("t1", OWNER)).status == "idle"
    with pytest.raises(NotFound):
        await store.get_run("r1", OTHER)


async def test_duplicate_run_id_conflicts_across_threads_and_owners(store: Store) -> None:
    await add_run(store, "r1", "t1")
    with pytest.raises(Conflict):
        await add_run(store, "r1", "t1")
    with pytest.raises(Conflict):
        await add_run(store, "r1", "t2")
    with pytest.raises(Conflict):
        await add_run(store, "r1", "t3", owner=OTHER)
    assert await _statuses(store) == {"r1": "pending"}


async def test_enqueue_queues_behind_active_runs(store: Store) -> None:
    await add_run(store, "r1", "t1")
    admission = await store.create_run(new_run("r2", "t1", strategy="enqueue"))
    assert (admission.cancel_requested, admission.cancelled_pending) == ((), ())
    await claim(store)
    admission = await store.create_run(new_run("r3", "t1", strategy="enqueue"))
    assert (admission.cancel_requested, admission.cancelled_pending) == ((), ())
    assert await _statuses(store) == {"r1": "running", "r2": "pending", "r3": "pending"}


@pytest.mark.parametrize("strategy", ["reject", "interrupt", "rollback", "enqueue"])
async def test_any_strategy_on_an_idle_thread_just_admits(store: Store, strategy: MultitaskStrategy) -> None:
    await add_run(store, "r0", "t1")
    run = await claim(store)
    await store.finish_run("r0", run.attempt, outcome())
    admission = await store.create_run(new_run("r1", "t1", strategy=strategy))
    assert (admission.cancel_requested, admission.cancelled_pending) == ((), ())
    assert await _statuses(store) == {"r0": "success", "r1": "pending"}


async def test_reject_on_a_pending_or_running_run_changes_nothing(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1")
    clock.advance(1)
    before = await store.get_thread("t1", OWNER)
    with pytest.raises(ThreadBusy):
        await add_run(store, "r2", "t1", strategy="reject")
    await claim(store)
    running_thread = await store.get_thread("t1", OWNER)
    with pytest.raises(ThreadBusy):
        await add_run(store, "r3", "t1", strategy="reject")
    assert await store.get_thread("t1", OWNER) == running_thread
    assert running_thread.status == before.status == "busy"
    assert await _statuses(store) == {"r1": "running"}
    with pytest.raises(NotFound):
        await store.get_run("r2", OWNER)


async def test_interrupt_requests_cancel_of_the_running_run(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1")
    running = await claim(store)
    clock.advance(1)
    admission = await store.create_run(new_run("r2", "t1", strategy="interrupt"))
    assert admission.cancelled_pending == ()
    [requested] = admission.cancel_requested
    assert requested.run_id == "r1"
    assert requested.status == "running"
    assert requested.cancel_action == "interrupt"
    assert requested.updated_at == clock.now()
    assert requested.attempt == running.attempt
    assert await store.get_run("r1", OWNER) == requested
    assert await store.renew_lease("r1", running.attempt, "w1", 30) == "interrupt"
    assert await _statuses(store) == {"r1": "running", "r2": "pending"}


async def test_interrupt_cancels_pending_runs(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1")
    running = await claim(store)
    await add_run(store, "r2", "t1")
    await add_run(store, "r3", "t1")
    clock.advance(1)
    admission = await store.create_run(new_run("r4", "t1", strategy="interrupt"))
    assert [run.run_id for run in admission.cancel_requested] == ["r1"]
    cancelled = sorted(admission.cancelled_pending, key=lambda run: run.run_id)
    assert [run.run_id for run in cancelled] == ["r2", "r3"]
    for run in cancelled:
        assert run.status == "interrupted"
        assert run.cancel_action == "interrupt"
        assert run.ended_at == run.updated_at == clock.now()
        assert run.started_at is None
        assert await store.get_run(run.run_id, OWNER) == run
    assert await _statuses(store) == {
        "r1": "running",
        "r2": "interrupted",
        "r3": "interrupted",
        "r4": "pending",
    }
    # The new run waits for the interrupted one to stop.
    assert await store.claim_run("w2", 30) is None
    await store.finish_run("r1", running.attempt, outcome("interrupted"))
    assert (await claim(store)).run_id == "r4"


async def test_rollback_requests_rollback_and_deletes_pending_runs(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await claim(store)
    await add_run(store, "r2", "t1")
    admission = await store.create_run(new_run("r3", "t1", strategy="rollback"))
    [requested] = admission.cancel_requested
    assert (requested.run_id, requested.cancel_action) == ("r1", "rollback")
    [deleted] = admission.cancelled_pending
    assert (deleted.run_id, deleted.status) == ("r2", "pending")
    with pytest.raises(NotFound):
        await store.get_run("r2", OWNER)
    assert await _statuses(store) == {"r1": "running", "r3": "pending"}


async def test_rollback_of_only_pending_runs(store: Store) -> None:
    await add_run(store, "r1", "t1", not_before=None)
    admission = await store.create_run(new_run("r2", "t1", strategy="rollback"))
    assert admission.cancel_requested == ()
    assert [run.run_id for run in admission.cancelled_pending] == ["r1"]
    assert await _statuses(store) == {"r2": "pending"}
    assert (await store.get_thread("t1", OWNER)).status == "busy"


async def test_interrupt_does_not_downgrade_a_rollback_request(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await claim(store)
    await store.create_run(new_run("r2", "t1", strategy="rollback"))
    admission = await store.create_run(new_run("r3", "t1", strategy="interrupt"))
    [requested] = admission.cancel_requested
    assert requested.cancel_action == "rollback"
    assert (await store.get_run("r1", OWNER)).cancel_action == "rollback"
    # r2 was pending and is now interrupted by r3's admission.
    assert await _statuses(store) == {"r1": "running", "r2": "interrupted", "r3": "pending"}
