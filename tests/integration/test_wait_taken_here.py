"""A run taken here in its admission, for a creator that waits (`runs.wait`), is not read first.

A waiter reads the run as it begins (has it ended already?), then sleeps until the run's "done"
hint. For a run a worker of this process took in its admission, for a creator that said it would
wait (`create_run(awaited=True)`), its end is kept from the admission on (`EndedHere.expect`), so
that first read has nothing to tell: skipped, however soon the run ends. The run's owner and thread
are still checked: another caller's wait reads, and is refused, as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runplane.core.errors import NotFound
from runplane.core.events import done_channel
from runplane.core.manager import ManagerSettings
from runplane.core.models import Run
from runplane.core.pages import new_id
from tests._reads import RunReads
from tests.integration._worker_support import GATE, Harness, harness

#: Far above any wait here: a waiter that missed the run's end would sit out this fallback.
SLOW_FALLBACK = 30.0


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()


async def _awaited(
    h: Harness, graph_id: str, owner: str = "", run_id: str | None = None, **kwargs: Any
) -> Run:
    thread = await h.manager.create_thread(owner)
    return await h.manager.create_run(
        thread.thread_id,
        graph_id,
        owner,
        kwargs={"graph_id": graph_id, **kwargs},
        run_id=run_id,
        awaited=True,
    )


def _settings() -> ManagerSettings:
    return ManagerSettings(wait_fallback_seconds=SLOW_FALLBACK)


async def test_the_waiter_of_a_run_taken_here_reads_nothing_first() -> None:
    async with harness(settings=_settings()) as h:
        reads = RunReads(h.manager)
        run = await _awaited(h, "gated", input={"log": ["in"]}, stream_mode=["custom"])
        waiter = asyncio.create_task(h.manager.wait_for_outcome(run.run_id, run.thread_id))
        await h.until(run, "custom")  # running, and the waiter is waiting
        assert reads.by(waiter) == []
        GATE["second"].set()
        async with asyncio.timeout(SLOW_FALLBACK / 3):
            ended, thread = await waiter
        assert ended is not None and ended.status == "success"
        assert thread is not None and thread.values == {"log": ["in", "first", "second"]}
        assert reads.by(waiter) == []  # nor after: the worker here handed its end over


async def test_a_run_that_ended_before_its_waiter_came_is_handed_over_at_once() -> None:
    async with harness(settings=_settings()) as h:
        reads = RunReads(h.manager)
        run_id = new_id()
        async with h.manager.bus.listen(done_channel(run_id)) as done:
            run = await _awaited(h, "echo", run_id=run_id, input={"n": 3})
            await anext(done)  # it ended before anyone waited for it
        async with asyncio.timeout(SLOW_FALLBACK / 3):
            ended, thread = await h.manager.wait_for_outcome(run.run_id, run.thread_id)
        assert ended is not None and ended.status == "success"
        assert thread is not None and thread.values == {"messages": [], "n": 3}
        assert reads.by(asyncio.current_task()) == []
        # Handed over once: a later wait reads, as for any run.
        assert (await h.manager.wait_for_run(run.run_id, timeout=1)) == ended
        assert reads.by(asyncio.current_task()) == [run.run_id]


async def test_another_owners_wait_or_another_thread_is_refused_as_before() -> None:
    async with harness(settings=_settings()) as h:
        run = await _awaited(h, "gated", owner="alice", input={"log": ["in"]}, stream_mode=["custom"])
        async for event in await h.manager.stream_run(run.run_id, "alice"):
            if event.event == "custom":
                break  # running
        with pytest.raises(NotFound):
            await h.manager.wait_for_run(run.run_id, "mallory", timeout=1)
        with pytest.raises(NotFound):
            await h.manager.wait_for_run(run.run_id, "alice", thread_id="another", timeout=1)
        GATE["second"].set()
        ended = await h.manager.wait_for_run(run.run_id, "alice", timeout=SLOW_FALLBACK / 3)
        assert ended is not None and ended.status == "success"


async def test_a_rolled_back_run_wakes_its_waiter_with_nothing() -> None:
    """A rollback deletes the run: no end is handed over; the waiter hears the hint and reads."""
    async with harness(settings=_settings()) as h:
        run = await _awaited(h, "gated", input={"log": ["in"]}, stream_mode=["custom"])
        waiter = asyncio.create_task(h.manager.wait_for_outcome(run.run_id, run.thread_id))
        await h.until(run, "custom")
        await h.manager.cancel_run(run.run_id, action="rollback")
        async with asyncio.timeout(SLOW_FALLBACK / 3):
            ended, _ = await waiter
        assert ended is None


async def test_a_run_not_taken_here_is_read_first() -> None:
    """Without a worker taking it in its admission (here, none runs), the waiter reads first."""
    async with harness(start=False, settings=_settings()) as h:
        reads = RunReads(h.manager)
        run = await _awaited(h, "echo", input={"n": 1})
        with pytest.raises(TimeoutError):
            await h.manager.wait_for_run(run.run_id, timeout=0.05)
        assert reads.by(asyncio.current_task()) == [run.run_id]
