"""Durable cancel requests: pending runs settle at once, running ones wait for their worker."""

from __future__ import annotations

import pytest

from runplane.core.errors import CancelRequested, Conflict, LeaseLost, NotFound
from runplane.core.models import RunFilter, RunStatus
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OTHER, OWNER, add_run, claim, outcome, running_run


async def test_interrupt_a_pending_run_settles_it(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1")
    clock.advance(2)
    result = await store.request_cancel("r1", OWNER, "interrupt")
    assert result.settled is True
    assert result.deleted is False
    run = result.run
    assert run.status == "interrupted"
    assert run.cancel_action == "interrupt"
    assert run.ended_at == run.updated_at == clock.now()
    assert run.started_at is None
    assert await store.get_run("r1", OWNER) == run
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == "idle"
    assert thread.updated_at == clock.now()
    assert await store.claim_run("w1", 30) is None


async def test_rollback_a_pending_run_deletes_it(store: Store, clock: FakeClock) -> None:
    created = await add_run(store, "r1", "t1")
    clock.advance(2)
    result = await store.request_cancel("r1", OWNER, "rollback")
    assert result.settled is True
    assert result.deleted is True
    assert result.run.run_id == "r1"
    assert result.run.status == "pending"
    assert result.run == created
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)
    assert await store.list_runs("t1", OWNER, RunFilter()) == []
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.updated_at) == ("idle", clock.now())


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancelling_one_of_two_pending_runs_keeps_the_thread_busy(store: Store, action: str) -> None:
    await add_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    await store.request_cancel("r1", OWNER, action)  # type: ignore[arg-type]
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    assert (await claim(store)).run_id == "r2"


async def test_interrupt_a_running_run_is_a_durable_request(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(1)
    result = await store.request_cancel("r1", OWNER, "interrupt")
    assert result.settled is False
    assert result.deleted is False
    assert result.run.status == "running"
    assert result.run.cancel_action == "interrupt"
    assert result.run.updated_at == clock.now()
    assert result.run.lease_expires_at == running.lease_expires_at
    assert await store.get_run("r1", OWNER) == result.run
    assert await store.renew_lease("r1", running.attempt, "w1", 30) == "interrupt"
    assert (await store.get_thread("t1", OWNER)).status == "busy"


@pytest.mark.parametrize("status", ["success", "error", "timeout"])
async def test_a_cancelled_run_cannot_finish_otherwise(store: Store, status: RunStatus) -> None:
    running = await running_run(store)
    await store.request_cancel("r1", OWNER, "interrupt")
    before = await store.get_run("r1", OWNER)
    with pytest.raises(CancelRequested) as raised:
        await store.finish_run("r1", running.attempt, outcome(status))
    assert raised.value.action == "interrupt"
    assert await store.get_run("r1", OWNER) == before
    finished = await store.finish_run("r1", running.attempt, outcome("interrupted"))
    assert finished.status == "interrupted"
    assert finished.cancel_action == "interrupt"


async def test_rollback_of_a_running_run_ends_with_discard(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    result = await store.request_cancel("r1", OWNER, "rollback")
    assert (result.settled, result.run.cancel_action) == (False, "rollback")
    with pytest.raises(CancelRequested) as raised:
        await store.finish_run("r1", running.attempt, outcome())
    assert raised.value.action == "rollback"
    clock.advance(1)
    discarded = await store.discard_run("r1", running.attempt)
    assert discarded.run_id == "r1"
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.updated_at) == ("idle", clock.now())


async def test_a_second_request_upgrades_to_rollback_only(store: Store, clock: FakeClock) -> None:
    await running_run(store, "r1", "t1")
    first = await store.request_cancel("r1", OWNER, "interrupt")
    clock.advance(1)
    again = await store.request_cancel("r1", OWNER, "interrupt")
    assert (again.settled, again.run.cancel_action) == (False, "interrupt")
    assert again.run.updated_at == clock.now()
    upgraded = await store.request_cancel("r1", OWNER, "rollback")
    assert upgraded.run.cancel_action == "rollback"
    assert first.run.cancel_action == "interrupt"
    clock.advance(1)
    kept = await store.request_cancel("r1", OWNER, "interrupt")
    assert kept.settled is False
    assert kept.run.cancel_action == "rollback"
    # A rollback request is never touched again: not even its updated_at moves.
    assert kept.run == upgraded.run
    assert await store.get_run("r1", OWNER) == upgraded.run


@pytest.mark.parametrize("status", ["success", "error", "timeout", "interrupted"])
@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancel_of_a_terminal_run_returns_it_unchanged(
    store: Store, clock: FakeClock, status: RunStatus, action: str
) -> None:
    running = await running_run(store)
    finished = await store.finish_run("r1", running.attempt, outcome(status, error="x"))
    thread = await store.get_thread("t1", OWNER)
    clock.advance(1)
    result = await store.request_cancel("r1", OWNER, action)  # type: ignore[arg-type]
    assert result.settled is True
    assert result.deleted is False
    assert result.run == finished
    assert await store.get_run("r1", OWNER) == finished
    assert await store.get_thread("t1", OWNER) == thread


async def test_cancel_checks_the_thread_id(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await add_run(store, "r2", "t2")
    with pytest.raises(NotFound):
        await store.request_cancel("r1", OWNER, "interrupt", thread_id="t2")
    result = await store.request_cancel("r1", OWNER, "interrupt", thread_id="t1")
    assert result.run.status == "interrupted"


async def test_cancel_of_unknown_or_foreign_run_is_not_found(store: Store) -> None:
    await add_run(store, "r1", "t1")
    with pytest.raises(NotFound):
        await store.request_cancel("nope", OWNER, "interrupt")
    with pytest.raises(NotFound):
        await store.request_cancel("r1", OTHER, "rollback")
    assert (await store.get_run("r1", OWNER)).status == "pending"


async def test_cancelled_run_lease_is_still_fenced(store: Store) -> None:
    running = await running_run(store)
    await store.request_cancel("r1", OWNER, "interrupt")
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", running.attempt + 1, outcome("interrupted"))
    with pytest.raises(LeaseLost):
        await store.discard_run("r1", running.attempt - 1)


# -- delete_run -------------------------------------------------------------------------------------


async def test_delete_a_pending_run(store: Store, clock: FakeClock) -> None:
    created = await add_run(store, "r1", "t1")
    clock.advance(1)
    deleted = await store.delete_run("r1", OWNER, "t1")
    assert deleted == created
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.updated_at) == ("idle", clock.now())
    assert await store.claim_run("w1", 30) is None


async def test_delete_one_of_two_pending_runs_keeps_the_thread_busy(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    await store.delete_run("r1", OWNER)
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    assert (await claim(store)).run_id == "r2"


async def test_delete_a_finished_run_leaves_the_thread_alone(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    finished = await store.finish_run("r1", running.attempt, outcome("error", "error", error="x"))
    thread = await store.get_thread("t1", OWNER)
    clock.advance(1)
    assert await store.delete_run("r1", OWNER) == finished
    assert await store.get_thread("t1", OWNER) == thread
    assert await store.list_runs("t1", OWNER, RunFilter()) == []


async def test_delete_a_running_run_conflicts(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(Conflict):
        await store.delete_run("r1", OWNER)
    assert await store.get_run("r1", OWNER) == running
    assert await store.renew_lease("r1", running.attempt, "w1", 30) is None


async def test_delete_run_checks_thread_and_existence(store: Store) -> None:
    await add_run(store, "r1", "t1")
    with pytest.raises(NotFound):
        await store.delete_run("r1", OWNER, "t2")
    with pytest.raises(NotFound):
        await store.delete_run("nope", OWNER)
    await store.delete_run("r1", OWNER)
    with pytest.raises(NotFound):
        await store.delete_run("r1", OWNER)
