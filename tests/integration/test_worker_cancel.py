"""Cancelling runs: interrupt keeps checkpoints, rollback restores the thread, pending never runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from runplane.core.errors import NotFound
from tests.integration._worker_support import GATE, STOPPED, decode, harness, open_saver


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()
    STOPPED.clear()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def saver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    async with open_saver(request.param, tmp_path) as opened:
        yield opened


async def test_interrupt_keeps_checkpoints_and_ends_after_the_task_stopped() -> None:
    async with harness() as h:
        run = await h.run("blocker", input={"log": ["start"]}, stream_mode=["values", "custom"])
        await h.until(run, "custom")  # the blocking node runs
        cancelled = await h.manager.cancel_run(run.run_id, action="interrupt", wait=True)
        assert cancelled is not None and cancelled.status == "interrupted"
        # Reported interrupted only once the graph's task was really stopped.
        assert STOPPED == ["blocker"]
        state = await h.runtime.get_state("blocker", run.thread_id)
        assert state["values"]["log"] == ["start", "first"]  # the step it reached is kept
        assert state["next"] == ["block"]
        thread = await h.manager.get_thread(run.thread_id)
        assert thread.status == "interrupted" and thread.values == {"log": ["start", "first"]}
        assert h.worker.cancelled == 1


async def test_rollback_restores_the_thread_and_deletes_the_run(saver: BaseCheckpointSaver[Any]) -> None:
    async with harness(checkpointer=saver) as h:
        thread_id = await h.thread()
        await h.done(await h.run("slow", thread_id, input={"steps": 2, "delay": 0}))
        before = await h.runtime.get_state("slow", thread_id)
        checkpoints_before = await h.checkpoints(thread_id)
        # LangGraph saves a run's checkpoints in the background while its steps go on: wait for one
        # of this run's to be written, so that the rollback has something to undo.
        written = asyncio.Event()
        aput = saver.aput

        async def signalling_aput(*args: Any, **kwargs: Any) -> Any:
            saved = await aput(*args, **kwargs)
            written.set()
            return saved

        saver.aput = signalling_aput  # type: ignore[method-assign]
        run = await h.run("slow", thread_id, input={"steps": 4, "delay": 30}, stream_mode=["custom"])
        await h.until(run, "custom", lambda c: c["step"] == 2)  # its first step (the thread did 0, 1)
        async with asyncio.timeout(5):
            await written.wait()
        assert len(await h.checkpoints(thread_id)) > len(checkpoints_before)
        assert await h.manager.cancel_run(run.run_id, action="rollback", wait=True) is None
        with pytest.raises(NotFound):
            await h.manager.get_run(run.run_id)
        assert await h.checkpoints(thread_id) == checkpoints_before
        after = await h.runtime.get_state("slow", thread_id)
        assert after["values"] == before["values"] == {"steps": 2, "delay": 0, "done": [0, 1]}
        assert after["checkpoint"] == before["checkpoint"]
        assert (await h.manager.get_thread(thread_id)).status == "idle"


async def test_rollback_of_a_resume_restores_the_pending_interrupt(saver: BaseCheckpointSaver[Any]) -> None:
    async with harness(checkpointer=saver) as h:
        thread_id = await h.thread()
        asked = await h.run("hitl_gated", thread_id, input={})
        await h.done(asked)
        interrupted = await h.runtime.get_state("hitl_gated", thread_id)
        assert interrupted["next"] == ["ask"] and interrupted["interrupts"]

        resumed = await h.run("hitl_gated", thread_id, command={"resume": "wrong"}, stream_mode=["custom"])
        await h.until(resumed, "custom")  # blocked in the step after the interrupt
        await h.manager.cancel_run(resumed.run_id, action="rollback", wait=True)

        restored = await h.runtime.get_state("hitl_gated", thread_id)
        assert restored["next"] == ["ask"]
        assert restored["interrupts"] == interrupted["interrupts"]
        assert restored["checkpoint"] == interrupted["checkpoint"]
        # The rolled-back resume value is gone: the next resume decides.
        GATE["second"].set()
        final = await h.run("hitl_gated", thread_id, command={"resume": "right"})
        assert (await h.done(final)).status == "success"  # type: ignore[union-attr]
        state = await h.runtime.get_state("hitl_gated", thread_id)
        assert state["values"] == {"answer": "right", "log": ["second"]}


async def test_a_cancelled_pending_run_never_runs() -> None:
    async with harness() as h:
        thread_id = await h.thread()
        first = await h.run("gated", thread_id, input={}, stream_mode=["custom"])
        await h.until(first, "custom")
        queued = await h.run("echo", thread_id, input={"n": 7})
        cancelled = await h.manager.cancel_run(queued.run_id, action="interrupt")
        assert cancelled is not None and cancelled.status == "interrupted"
        GATE["second"].set()
        await h.done(first)
        await h.worker.run_until_idle()
        final = await h.manager.get_run(queued.run_id)
        assert final.status == "interrupted" and final.attempt == 0 and final.started_at is None
        assert await h.events(queued) == []
        assert h.worker.claimed == 1


async def test_enqueued_run_starts_after_the_earlier_one_ends() -> None:
    async with harness() as h:
        thread_id = await h.thread()
        first = await h.run("gated", thread_id, input={}, stream_mode=["custom"])
        await h.until(first, "custom")
        second = await h.run("echo", thread_id, input={"n": 2})
        assert (await h.manager.get_run(second.run_id)).status == "pending"
        GATE["second"].set()
        done_first, done_second = await h.done(first), await h.done(second)
        assert done_first is not None and done_second is not None
        assert done_second.status == "success"
        assert done_first.ended_at is not None and done_second.started_at is not None
        assert done_first.ended_at <= done_second.started_at


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_multitask_strategies_cancel_the_running_run(strategy: str) -> None:
    async with harness() as h:
        thread_id = await h.thread()
        first = await h.run("blocker", thread_id, input={"log": ["a"]}, stream_mode=["custom"])
        await h.until(first, "custom")
        second = await h.run("echo", thread_id, input={"n": 3}, multitask_strategy=strategy)
        assert (await h.done(second)).status == "success"  # type: ignore[union-attr]
        assert STOPPED == ["blocker"]
        if strategy == "interrupt":
            assert (await h.manager.get_run(first.run_id)).status == "interrupted"
        else:
            with pytest.raises(NotFound):
                await h.manager.get_run(first.run_id)
        saver = h.runtime.checkpointer
        written = [
            c
            async for c in saver.alist(
                {"configurable": {"thread_id": thread_id}}, filter={"run_id": first.run_id}
            )
        ]
        assert bool(written) == (strategy == "interrupt")  # a rollback leaves nothing of the run


async def test_cancel_hint_lost_is_caught_at_the_next_heartbeat() -> None:
    async with harness(heartbeat_seconds=0.05) as h:
        run = await h.run("blocker", input={}, stream_mode=["custom"])
        await h.until(run, "custom")
        # A durable request without its hint (as if the hint was lost in transit).
        await h.manager.store.request_cancel(run.run_id, "", "interrupt")
        final = await h.done(run)
        assert final is not None and final.status == "interrupted"


async def test_cancel_wins_over_a_finish_racing_it() -> None:
    async with harness() as h:
        run = await h.run("gated", input={}, stream_mode=["custom"])
        await h.until(run, "custom")
        # Durable request, no hint, then let the graph finish: finish must lose to the cancel.
        await h.manager.store.request_cancel(run.run_id, "", "interrupt")
        GATE["second"].set()
        final = await h.done(run)
        assert final is not None and final.status == "interrupted"
        assert decode((await h.events(run))[0]) == {"run_id": run.run_id, "attempt": 1}
