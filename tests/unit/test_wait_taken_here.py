"""The core of a wait that reads nothing first (`EndedHere.expect`, `create_run(awaited=True)`).

A stand-in for the worker that takes runs at their admission (`TakesRunsAtAdmission`) starts
nothing: the test ends the runs itself through the manager, as a worker would. The worker itself,
end to end, is in tests/integration/test_wait_taken_here.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any

import pytest

from runplane.core.ended_here import KEPT_AT_MOST, EndedHere
from runplane.core.errors import NotFound
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome, Run
from runplane.testing import memory_manager
from tests._reads import RunReads

#: A waiter that missed the run's end would sit out this fallback: far above every wait here.
NO_POLLING = ManagerSettings(lease_seconds=30, wait_fallback_seconds=3600)


class TakingWorker:
    """Takes every run it can at its admission; `starts` says whether it still starts them."""

    worker_id = "here"

    def __init__(self, starts: bool = True) -> None:
        self.starts = starts
        self.started: list[Run] = []
        self.released = 0

    async def reserve_slot(self) -> bool:
        return True

    def release_slot(self) -> None:
        self.released += 1

    def start_claimed(self, run: Run) -> bool:
        if self.starts:
            self.started.append(run)
        return self.starts


@pytest.fixture
def manager() -> RunManager:
    return memory_manager(settings=NO_POLLING)


async def _taken(manager: RunManager, worker: TakingWorker, *, awaited: bool = True, owner: str = "") -> Run:
    manager.take_runs_here(worker)
    created = await manager.create_run("t1", "agent", owner, if_not_exists="create", awaited=awaited)
    assert worker.started and worker.started[-1].run_id == created.run_id
    return worker.started[-1]


async def test_a_waiter_of_a_run_taken_for_it_reads_nothing(manager: RunManager) -> None:
    run = await _taken(manager, TakingWorker())
    reads = RunReads(manager)
    waiter = asyncio.create_task(manager.wait_for_outcome(run.run_id, "t1"))
    await asyncio.sleep(0)
    assert not waiter.done()
    await manager.finish_and_look(run, Outcome("success", "idle", thread_values={"ok": True}))
    async with asyncio.timeout(1):
        ended, thread = await waiter
    assert ended is not None and ended.status == "success"
    assert thread is not None and thread.values == {"ok": True}
    assert reads.by(waiter) == []


async def test_an_end_before_the_waiter_came_is_handed_over_at_once(manager: RunManager) -> None:
    run = await _taken(manager, TakingWorker())
    reads = RunReads(manager)
    await manager.finish_and_look(run, Outcome("error", "error", error="boom"))
    async with asyncio.timeout(1):
        ended = await manager.wait_for_run(run.run_id, thread_id="t1")
    assert ended is not None and ended.status == "error"
    assert reads.by(asyncio.current_task()) == []
    assert manager.ended_here.get(run.run_id) is None  # handed over once: nothing kept after


async def test_an_end_the_worker_could_not_read_is_read_from_the_thread(manager: RunManager) -> None:
    run = await _taken(manager, TakingWorker())
    await manager.finish_and_look(run, Outcome("success", "idle", thread_values=None))
    async with asyncio.timeout(1):
        ended, thread = await manager.wait_for_outcome(run.run_id, "t1")
    assert ended is not None and ended.status == "success" and thread is not None


async def test_the_owner_and_the_thread_are_still_checked(manager: RunManager) -> None:
    run = await _taken(manager, TakingWorker(), owner="alice")
    for owner, thread_id in (("mallory", None), ("alice", "t2")):
        with pytest.raises(NotFound):
            await manager.wait_for_run(run.run_id, owner, thread_id=thread_id, timeout=1)


async def test_without_awaited_or_without_a_start_the_waiter_reads(manager: RunManager) -> None:
    run = await _taken(manager, TakingWorker(), awaited=False)
    assert not manager.ended_here.expected(run.run_id, "", None)
    stopped = TakingWorker(starts=False)
    manager.take_runs_here(stopped)
    created = await manager.create_run("t2", "agent", if_not_exists="create", awaited=True)
    assert not manager.ended_here.expected(created.run_id, "", None)
    assert (await manager.get_run(created.run_id)).status == "pending"  # handed back to the queue


def _run(run_id: str, owner: str = "", thread_id: str = "t") -> Run:
    from datetime import datetime

    now = datetime.now(UTC)
    return Run(run_id, thread_id, "a", owner, "success", "enqueue", now, now)


def test_expected_runs_keep_their_end_for_their_owner_until_their_waiter_leaves() -> None:
    kept = EndedHere()
    kept.expect(_run("r1", "alice", "t1"))
    assert kept.expected("r1", "alice", None) and kept.expected("r1", "alice", "t1")
    assert not kept.expected("r1", "alice", "t2") and not kept.expected("r1", "bob", None)
    assert kept.get("r1") is None  # not ended yet
    outcome = Outcome("success", "idle")
    kept.ended(_run("r1", "alice", "t1"), outcome)
    kept.ended(_run("r2"), outcome)  # neither expected nor waited for: not kept
    assert kept.get("r1") is not None and kept.get("r2") is None
    with kept.waiting("r1"):
        assert kept.get("r1") is not None
    assert kept.get("r1") is None and not kept.expected("r1", "alice", None)


def test_expected_runs_are_kept_at_most_a_bounded_number() -> None:
    kept = EndedHere()
    for i in range(KEPT_AT_MOST + 10):
        kept.expect(_run(f"r{i}"))
    assert not kept.expected("r0", "", None) and not kept.expected("r9", "", None)
    assert kept.expected("r10", "", None) and kept.expected(f"r{KEPT_AT_MOST + 9}", "", "t")


async def test_the_waiter_listens_on_no_bus(manager: RunManager) -> None:
    """Its end is announced here (`EndedHere.announce`): no subscription per wait on a shared bus."""
    run = await _taken(manager, TakingWorker())
    listened: list[str] = []
    bus: Any = manager.bus
    listen = bus.listen

    def counted(channel: str) -> Any:
        listened.append(channel)
        return listen(channel)

    bus.listen = counted
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    await manager.cancel_run(run.run_id, action="rollback")
    await manager.discard(run)  # as the worker ends a rollback: announced, with no outcome
    async with asyncio.timeout(1):
        assert await waiter is None
    assert listened == []


async def test_a_run_ended_elsewhere_after_all_is_found_by_the_fallback_read() -> None:
    """Its lease lost, another process ended it: nothing is announced here, the periodic read
    finds it."""
    manager = memory_manager(settings=ManagerSettings(lease_seconds=30, wait_fallback_seconds=0.05))
    run = await _taken(manager, TakingWorker())
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    await manager.store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))
    async with asyncio.timeout(5):
        ended = await waiter
    assert ended is not None and ended.status == "success"
