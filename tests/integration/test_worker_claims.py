"""The worker claims once per run and still never leaves a claimable run to the fallback poll.

It used to claim again right after every claim (to see whether more was claimable) and after every
finished run (it may have unblocked its thread's next run): three claims per run where one does.
Now the claim says whether more is claimable (`Claimed.more`) and the finish whether the thread's
next run became claimable (`Finished.next_claimable`), each in its own transaction; hints cover the
rest. Every worker here polls once an hour, so a run the push missed would never start in time.
Runs its own process admits are mostly taken by their admission, without a claim
(`test_claim_at_admission.py`); the tests that count claims admit theirs as another process would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.events import EventBus
from runplane.core.manager import RunManager
from runplane.core.models import Claimed, Run
from runplane.events.memory import InMemoryBus
from runplane.events.postgres import PostgresBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores import open_store
from runplane.testing import FakeClock
from runplane.worker import Worker
from tests._services import postgres_database
from tests.integration._worker_support import GATE, GRAPHS, STOPPED, Claims, Harness, harness

#: Far beyond anything a test waits: a run left to the poll does not start within the test.
NO_POLL = 3600.0
#: Liveness bound, not a latency figure: every run here takes milliseconds.
STALLED_AFTER = 30.0
#: No quick looks again after a hint that found nothing (`Worker.claim_retry_seconds`): they would
#: pick up a queued run whose predecessor ends within them, and hide a finish that did not wake.
NO_RETRY: tuple[float, ...] = ()


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()
    STOPPED.clear()


def admitted_elsewhere(h: Harness) -> None:
    """Runs reach the worker by its claims only, as runs another process admits do: its own
    manager's admissions no longer take runs for it (`RunManager.take_runs_here`)."""
    h.manager.take_runs_here(None)


async def finished(h: Harness, run: Run) -> Run:
    final = await h.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
    assert final is not None, f"run {run.run_id} never ended: left to the poll?"
    return final


# -- one claim per run ----------------------------------------------------------------------------


@pytest.mark.parametrize("new_threads", [False, True])
async def test_sequential_runs_make_one_claim_each(new_threads: bool) -> None:
    async with harness(start=False, poll_interval=NO_POLL) as h:
        claims = Claims(h)
        await h.worker.start()
        admitted_elsewhere(h)
        await claims.made.wait()  # its first look, at an empty queue (else it races the first run)
        thread_id = await h.thread()
        runs = 12
        for i in range(runs):
            run = await h.run("echo", None if new_threads else thread_id, input={"n": i})
            assert (await finished(h, run)).status == "success"
        # One claim per run, plus that first look. It used to be three per run: one more after
        # each claim, and one after each finished run.
        assert h.worker.claimed == runs
        assert claims.empty == 1, [c.run.run_id if c.run else None for c in claims.seen]
        assert h.worker.polled == 0


async def test_a_backlog_is_claimed_without_an_empty_claim_between() -> None:
    async with harness(start=False, poll_interval=NO_POLL, concurrency=4) as h:
        claims = Claims(h)
        runs = [await h.run("echo", input={"n": i}) for i in range(8)]  # on 8 threads
        await h.worker.start()
        for run in runs:
            assert (await finished(h, run)).status == "success"
        assert h.worker.claimed == 8
        # Created before the worker listened, the backlog sent it no hint: each claim said whether
        # to claim again, the last one no, and no finished run of it unblocked another.
        assert [c.more for c in claims.seen] == [True] * 7 + [False]
        assert h.worker.polled == 0


async def test_a_hinted_run_another_worker_took_is_not_looked_for_again() -> None:
    """Every worker hears a run's wake-up; the ones that lose it to another's claim used to look
    again four times (`claim_retry_seconds`) for a run that was gone. The claim now says whether it
    passed a due run over (`Claimed.contended`): it did not, so the loser waits for the next hint."""
    async with harness(start=False, poll_interval=NO_POLL, claim_retry_seconds=(0.01, 0.01, 0.01)) as h:
        claims = Claims(h)
        rival: list[Claimed] = []
        claim = claims._claim

        async def losing(worker_id: str) -> Claimed:
            if claims.seen:  # after the first look at the empty queue: another worker wins first
                rival.append(await h.manager.store.claim_and_look("rival", 30))
            return await claim(worker_id)

        claims._claim = losing
        await h.worker.start()
        admitted_elsewhere(h)
        await claims.made.wait()  # its first look, at the empty queue
        claims.made.clear()
        taken = await h.run("echo", input={"n": 1})  # its hint wakes the worker
        await claims.made.wait()
        assert [c.run.run_id if c.run else None for c in rival] == [taken.run_id]
        assert claims.seen[-1] == Claimed(None)  # nothing due was passed over
        claims.made.clear()
        # The looks again would come within 30 ms; none does (the poll is an hour away).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(claims.made.wait(), timeout=0.5)
        assert claims.empty == 2 and h.worker.claimed == 0


# -- still pushed ---------------------------------------------------------------------------------


async def test_a_run_queued_behind_another_starts_when_it_ends() -> None:
    async with harness(poll_interval=NO_POLL, claim_retry_seconds=NO_RETRY) as h:
        thread_id = await h.thread()
        first = await h.run("gated", thread_id, input={"log": ["in"]}, stream_mode=["custom"])
        await h.until(first, "custom")  # running, its second step waits on the gate
        queued = await h.run("echo", thread_id, input={"n": 1})
        GATE["second"].set()
        assert (await finished(h, first)).status == "success"
        assert (await finished(h, queued)).status == "success"
        assert h.worker.polled == 0


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_the_run_that_cancelled_the_running_one_starts_at_once(strategy: str) -> None:
    async with harness(poll_interval=NO_POLL, claim_retry_seconds=NO_RETRY) as h:
        thread_id = await h.thread()
        first = await h.run("blocker", thread_id, input={"log": ["in"]}, stream_mode=["custom"])
        await h.until(first, "custom")
        second = await h.run("echo", thread_id, input={"n": 2}, multitask_strategy=strategy)
        assert (await finished(h, second)).status == "success"
        assert STOPPED == ["blocker"]
        assert h.worker.polled == 0


async def test_a_run_created_while_a_claim_is_in_flight_is_picked_up() -> None:
    async with harness(start=False, poll_interval=NO_POLL, claim_retry_seconds=NO_RETRY) as h:
        claim = h.manager.claim_and_look
        late: list[Run] = []

        async def claim_then_admit(worker_id: str) -> Claimed:
            claimed = await claim(worker_id)
            if claimed.run is not None and not late:
                # Admitted after the claim looked at the queue: the claim says nothing more is
                # claimable, and only this run's hint (sent now, mid-claim) can wake the worker.
                assert not claimed.more
                late.append(await h.run("echo", input={"n": "late"}))
            return claimed

        h.manager.claim_and_look = claim_then_admit  # type: ignore[method-assign]
        await h.worker.start()
        admitted_elsewhere(h)
        first = await h.run("echo", input={"n": "first"})
        assert (await finished(h, first)).status == "success"
        assert (await finished(h, late[0])).status == "success"
        assert h.worker.polled == 0


async def test_a_run_unblocked_by_a_recovered_run_starts_without_the_poll() -> None:
    # A dead worker's run ends on recovery (its interrupt request is honoured there): the run
    # queued behind it on its thread becomes claimable, and no live worker's finish says so.
    clock = FakeClock()
    async with harness(
        start=False, clock=clock, poll_interval=NO_POLL, recovery_interval=0.02, claim_retry_seconds=NO_RETRY
    ) as h:
        thread_id = await h.thread()
        await h.run("echo", thread_id, input={"n": 0})
        dead = await h.manager.claim("dead-worker")
        assert dead is not None
        queued = await h.run("echo", thread_id, input={"n": 1})
        await h.manager.cancel_run(dead.run_id, action="interrupt")
        await h.worker.start()  # looks once: nothing is claimable yet
        clock.advance(h.manager.settings.lease_seconds + 1)  # the dead worker's lease expires
        assert (await finished(h, queued)).status == "success"
        assert (await h.manager.get_run(dead.run_id)).status == "interrupted"
        assert h.worker.polled == 0


# -- several workers ------------------------------------------------------------------------------


@asynccontextmanager
async def _workers(kind: str, tmp_path: Path, count: int) -> AsyncIterator[list[Worker]]:
    """`count` workers, each with its own store instance and manager on one database, as
    separate processes have; they share the bus (an in-process one for SQLite, as Redis would be
    shared; one PostgreSQL bus each on PostgreSQL)."""
    with contextlib.ExitStack() as databases:
        url = (
            f"sqlite:///{tmp_path / 'runplane.db'}"
            if kind == "sqlite"
            else databases.enter_context(postgres_database())
        )
        shared = InMemoryBus()
        buses: list[EventBus] = []
        workers: list[Worker] = []
        runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
        try:
            for _ in range(count):
                store = open_store(url)
                await store.open()
                if kind == "sqlite":
                    bus: EventBus = shared
                else:
                    bus = PostgresBus.from_url(url)
                    buses.append(bus)
                worker = Worker(
                    RunManager(store, bus), runtime, concurrency=2, shutdown_grace=0.5, poll_interval=NO_POLL
                )
                await worker.start()
                workers.append(worker)
            yield workers
        finally:
            for worker in workers:
                await worker.stop()
                await worker.manager.store.close()
            for bus in buses:
                await bus.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_several_workers_run_queued_threads_without_the_poll(kind: str, tmp_path: Path) -> None:
    async with _workers(kind, tmp_path, 2) as workers:
        manager = workers[0].manager
        runs: list[Run] = []
        for _ in range(4):
            thread_id = (await manager.create_thread()).thread_id
            for i in range(3):  # queued behind each other: each starts when the one before ends
                runs.append(
                    await manager.create_run(
                        thread_id, "echo", kwargs={"graph_id": "echo", "input": {"n": i}}
                    )
                )
        async with asyncio.timeout(STALLED_AFTER):
            for run in runs:
                final = await manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
                assert final is not None and final.status == "success"
        assert sum(worker.claimed for worker in workers) == len(runs)
        assert sum(worker.polled for worker in workers) == 0
