"""A worker takes the runs its own process admits, in their admission (`RunManager.take_runs_here`).

While it has a free slot, the admission claims the run for it when the run can start at once, so
the claim it would make after the wake-up hint never happens. These tests count the worker's
claims through the manager's one door: zero for runs taken at admission, and the usual path for
the runs that cannot be (a full worker, a busy thread, a worker stopping).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.manager import RunManager
from runplane.core.models import Admission, Claimed, NewRun, Run
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores import open_store
from runplane.worker import Worker
from tests.integration._worker_support import GATE, GRAPHS, Claims, Harness, harness

NO_POLL = 3600.0
STALLED_AFTER = 30.0


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()


async def finished(h: Harness, run: Run) -> Run:
    final = await h.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
    assert final is not None, f"run {run.run_id} never ended"
    return final


@pytest.mark.parametrize("new_threads", [False, True])
async def test_runs_admitted_here_start_without_a_claim(new_threads: bool) -> None:
    async with harness(start=False, poll_interval=NO_POLL) as h:
        claims = Claims(h)
        await h.worker.start()
        await claims.made.wait()  # its first look, at an empty queue
        thread_id = await h.thread()
        for i in range(6):
            run = await h.run("echo", None if new_threads else thread_id, input={"n": i})
            # Answered as created, like LangGraph's server, though a worker holds it already.
            assert (run.status, run.attempt, run.started_at) == ("pending", 0, None)
            final = await finished(h, run)
            assert (final.status, final.attempt) == ("success", 1)
        assert h.worker.claimed == 6
        # No claim but the first look: each run was claimed by its admission, and its wake-up
        # hint, heard by this worker, was recognised as a run already taken.
        assert len(claims.seen) == 1 and claims.runs == []
        assert h.worker.polled == 0


async def test_a_full_worker_leaves_the_run_to_the_queue() -> None:
    async with harness(start=False, poll_interval=NO_POLL, concurrency=1) as h:
        claims = Claims(h)
        await h.worker.start()
        busy = await h.run("gated", input={"log": ["in"]}, stream_mode=["custom"])
        await h.until(busy, "custom")  # running in the one slot
        queued = await h.run("echo", input={"n": 1})  # another thread, free to start
        assert (await h.manager.get_run(queued.run_id)).status == "pending"
        GATE["second"].set()
        assert (await finished(h, busy)).status == "success"
        assert (await finished(h, queued)).status == "success"
        # Claimed the usual way once the slot was free. (The first run may have been too: a
        # claim in flight holds a slot, here the only one, so its admission may have found none.)
        assert claims.runs[-1] == queued.run_id
        assert h.worker.polled == 0


async def test_a_run_behind_another_on_its_thread_is_claimed_when_that_one_ends() -> None:
    async with harness(start=False, poll_interval=NO_POLL, concurrency=4) as h:
        claims = Claims(h)
        await h.worker.start()
        await claims.made.wait()
        thread_id = await h.thread()
        first = await h.run("gated", thread_id, input={"log": ["in"]}, stream_mode=["custom"])
        await h.until(first, "custom")
        second = await h.run("echo", thread_id, input={"n": 2})
        assert (await h.manager.get_run(second.run_id)).status == "pending"
        GATE["second"].set()
        assert (await finished(h, second)).status == "success"
        assert claims.runs == [second.run_id]


async def test_concurrent_admissions_on_one_thread_take_one_run() -> None:
    async with harness(poll_interval=NO_POLL, concurrency=4) as h:
        thread_id = await h.thread()
        runs = await asyncio.gather(*(h.run("echo", thread_id, input={"n": i}) for i in range(4)))
        finals = [await finished(h, run) for run in runs]
        assert [final.status for final in finals] == ["success"] * 4
        # One run at a time on the thread, in admission order.
        starts = sorted(finals, key=lambda final: final.started_at or final.created_at)
        assert [final.run_id for final in starts] == [run.run_id for run in runs]
        for before, after in itertools.pairwise(starts):
            assert before.ended_at is not None and after.started_at is not None
            assert before.ended_at <= after.started_at


async def test_a_run_claimed_for_a_worker_that_stopped_meanwhile_goes_back_to_the_queue() -> None:
    async with harness(poll_interval=NO_POLL) as h:
        store = h.manager.store
        admit = store.create_run
        admitting, resume = asyncio.Event(), asyncio.Event()

        async def slow_admission(new: NewRun) -> Admission:
            admitting.set()
            await resume.wait()
            return await admit(new)

        store.create_run = slow_admission  # type: ignore[method-assign]
        creating = asyncio.create_task(h.run("echo", input={"n": 1}))
        await admitting.wait()  # the slot is reserved, the admission is on its way
        await h.worker.stop()
        resume.set()
        created = await creating
        run = await h.manager.get_run(created.run_id)
        # Claimed by the admission, then handed back rather than leased to a stopped worker.
        assert (run.status, run.lease_owner) == ("pending", None)
        assert h.worker.claimed == 0


async def test_a_run_taken_at_admission_wakes_no_worker_of_another_process(tmp_path: Path) -> None:
    """Two processes, each an API and a worker, on one database and one bus (as Redis is shared).
    A run taken by its admission still announces itself (thread streams follow a thread's runs),
    but as taken: the other process's worker, which would have raced for it and found nothing,
    makes no claim."""
    url = f"sqlite:///{tmp_path / 'runplane.db'}"
    bus = InMemoryBus()
    runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
    stores = [open_store(url), open_store(url)]
    workers: list[Worker] = []
    try:
        for store in stores:
            await store.open()
            workers.append(Worker(RunManager(store, bus), runtime, poll_interval=NO_POLL, shutdown_grace=0.5))
        here, elsewhere = workers
        seen_elsewhere = asyncio.Event()
        claims_elsewhere: list[Claimed] = []
        claim = elsewhere.manager.claim_and_look

        async def counted(worker_id: str) -> Claimed:
            claimed = await claim(worker_id)
            claims_elsewhere.append(claimed)
            seen_elsewhere.set()
            return claimed

        elsewhere.manager.claim_and_look = counted  # type: ignore[method-assign]
        for worker in workers:
            await worker.start()
        await seen_elsewhere.wait()  # its first look, at the empty queue
        manager = here.manager
        for i in range(5):
            thread = await manager.create_thread()
            run = await manager.create_run(
                thread.thread_id, "echo", kwargs={"graph_id": "echo", "input": {"n": i}}
            )
            final = await manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
            assert final is not None and final.status == "success"
        assert here.claimed == 5 and elsewhere.claimed == 0
        assert len(claims_elsewhere) == 1  # the first look only
    finally:
        for worker in workers:
            await worker.stop()
        for store in stores:
            await store.close()
