"""The SQLite fence's shortcut (issue 14): a store that took or renewed an attempt's lease less than
half a lease ago lets that attempt's checkpoint writes through without asking the database. These
tests pin what keeps that airtight: every way the attempt can lose the run closes the shortcut,
whether it happens through this store or another process's store on the same file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runplane.core.errors import LeaseLost
from runplane.core.models import NewRun, NewThread, Outcome, Run
from runplane.stores.sqlite.store import SqliteStore
from runplane.testing import FakeClock

LEASE = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stores(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    """Two stores on one file, as two processes of a deployment have."""
    path = str(tmp_path / "runplane.db")
    async with SqliteStore(path, clock=clock) as first, SqliteStore(path, clock=clock) as second:
        yield first, second


async def _running(store: SqliteStore, run_id: str = "r1", thread_id: str = "t1") -> Run:
    await store.create_thread(NewThread(thread_id=thread_id))
    await store.create_run(NewRun(run_id, thread_id, "agent"))
    run = await store.claim_run("w1", LEASE)
    assert run is not None and run.run_id == run_id
    return run


async def _holds(store: SqliteStore, run: Run) -> bool:
    try:
        async with store.hold_attempt(run.run_id, run.attempt, LEASE):
            return True
    except LeaseLost:
        return False


async def test_an_attempt_recovered_by_another_process_is_fenced(
    stores: tuple[SqliteStore, SqliteStore], clock: FakeClock
) -> None:
    first, second = stores
    run = await _running(first)
    assert await _holds(first, run)
    clock.advance(LEASE + 1)  # the first process stalled a whole lease
    [expired] = await second.expired_runs()
    await second.recover_run(expired.run_id, expired.attempt, max_attempts=3)
    again = await second.claim_run("w2", LEASE)
    assert again is not None and again.attempt == 2
    assert not await _holds(first, run)
    assert await _holds(second, again)


async def test_past_half_its_lease_the_attempt_asks_the_database(
    stores: tuple[SqliteStore, SqliteStore], clock: FakeClock
) -> None:
    first, second = stores
    run = await _running(first)
    clock.advance(LEASE / 2 + 1)
    await second.delete_thread("t1", run.owner)  # another process deleted the thread meanwhile
    assert not await _holds(first, run)


async def test_a_renewal_opens_the_shortcut_and_a_failed_one_closes_it(
    stores: tuple[SqliteStore, SqliteStore], clock: FakeClock
) -> None:
    first, second = stores
    run = await _running(first)
    clock.advance(LEASE / 2 + 1)
    await first.renew_lease(run.run_id, run.attempt, "w1", LEASE)
    assert await _holds(first, run)
    clock.advance(LEASE + 1)
    [expired] = await second.expired_runs()
    await second.recover_run(expired.run_id, expired.attempt, max_attempts=3)
    with pytest.raises(LeaseLost):
        await first.renew_lease(run.run_id, run.attempt, "w1", LEASE)
    assert not await _holds(first, run)


async def test_deleting_the_thread_here_fences_its_running_attempt_at_once(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    first, _ = stores
    run = await _running(first)
    assert await _holds(first, run)
    await first.delete_thread("t1", run.owner)
    assert not await _holds(first, run)


@pytest.mark.parametrize("ending", ["finish", "release", "discard"])
async def test_an_ended_attempt_is_fenced(stores: tuple[SqliteStore, SqliteStore], ending: str) -> None:
    first, _ = stores
    run = await _running(first)
    if ending == "finish":
        await first.finish_run(run.run_id, run.attempt, Outcome(status="success", thread_status="idle"))
    elif ending == "release":
        await first.release_run(run.run_id, run.attempt)
    else:
        await first.discard_run(run.run_id, run.attempt)
    assert not await _holds(first, run)
