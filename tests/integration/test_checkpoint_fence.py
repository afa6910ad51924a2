"""A stale attempt writes no checkpoint: its late step cannot replace the newer attempt's state.

The scenario of a process that stalls (a GC pause, a CPU-bound node, SIGSTOP) for longer than its
lease while a step runs: the run is recovered, a second attempt finishes it, then the stalled step
ends. Without the fence its checkpoint would become the thread's latest state. Driven through
`Execution` with no heartbeat, so nothing but the fence can stop the stale write; on each store
with the saver it is deployed with.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from runplane.core.manager import RunManager
from runplane.core.models import Run, TokenUsage
from runplane.events.memory import InMemoryBus
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores import open_store
from runplane.testing import FakeClock
from runplane.worker.executor import Execution
from tests._services import postgres_database


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


@dataclass
class Stall:
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


#: run id -> the stall of its first attempt's second step.
STALLS: dict[str, Stall] = {}


def _attempt(config: RunnableConfig) -> int:
    return int(config["metadata"]["run_attempt"])


async def _first(state: LogState, config: RunnableConfig) -> LogState:
    return {"log": [f"first@{_attempt(config)}"]}


async def _second(state: LogState, config: RunnableConfig) -> LogState:
    stall = STALLS.get(config["configurable"]["run_id"])
    if stall is not None and _attempt(config) == 1:
        stall.entered.set()
        await stall.release.wait()
    return {"log": [f"second@{_attempt(config)}"]}


_builder = StateGraph(LogState)
_builder.add_node("first", _first)
_builder.add_node("second", _second)
_builder.add_edge(START, "first")
_builder.add_edge("first", "second")
_builder.add_edge("second", END)
stalling = _builder.compile(name="stalling")


@asynccontextmanager
async def deployment(kind: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[RunManager, Any]]:
    """A manager on store `kind` and a runtime on that database's own LangGraph saver."""
    with contextlib.ExitStack() as databases:
        url = {"memory": "memory:", "sqlite": f"sqlite:///{tmp_path / 'runplane.db'}"}.get(kind)
        if url is None:
            url = databases.enter_context(postgres_database())
        store = open_store(url, clock=clock)
        await store.open()
        try:
            async with open_checkpointer(url) as saver:
                yield (
                    RunManager(store, InMemoryBus(), clock=clock),
                    LangGraphRuntime({"stalling": stalling}, saver),
                )
        finally:
            await store.close()


def execution(manager: RunManager, runtime: Any, run: Run) -> Execution:
    """An attempt as the worker builds it, without the worker's heartbeat."""

    async def publish(event: str, payload: Any) -> None:
        pass

    async def progress(model_name: str | None, usage: TokenUsage) -> None:
        pass

    return Execution(run, runtime, publish, progress, lambda: manager.hold(run))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_a_stalled_attempt_writes_nothing_after_a_newer_attempt_finished(
    kind: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    async with deployment(kind, tmp_path, clock) as (manager, runtime):
        thread = await manager.create_thread()
        kwargs: Any = {"graph_id": "stalling", "input": {}, "durability": "sync"}
        run = await manager.create_run(thread.thread_id, "stalling", kwargs=kwargs)
        stall = STALLS[run.run_id] = Stall()
        first = await manager.claim("stalled-worker")
        assert first is not None and first.attempt == 1
        stalled = asyncio.create_task(execution(manager, runtime, first).execute())
        await stall.entered.wait()

        # The stalled worker's lease expires; the run is recovered and attempt 2 finishes it.
        clock.advance(manager.settings.lease_seconds + 1)
        assert [r.run_id for r in await manager.recover_expired()] == [run.run_id]
        second = await manager.claim("healthy-worker")
        assert second is not None and second.attempt == 2
        finished = await manager.finish(second, await execution(manager, runtime, second).execute())
        assert finished.status == "success"
        root: Any = {"configurable": {"thread_id": thread.thread_id, "checkpoint_ns": ""}}
        latest = await runtime.checkpointer.aget_tuple(root)
        checkpoints = [c.config async for c in runtime.checkpointer.alist(root)]

        # The stalled step now ends: its writes are refused, and the attempt ends with LeaseLost.
        stall.release.set()
        late = await stalled
        assert late.status == "error" and late.error is not None and late.error.startswith("LeaseLost")
        assert [c.config async for c in runtime.checkpointer.alist(root)] == checkpoints
        assert (await runtime.checkpointer.aget_tuple(root)).config == latest.config
        state = await runtime.get_state("stalling", thread.thread_id)
        assert state["values"]["log"] == ["first@1", "second@2"] and state["next"] == []
        assert (await manager.get_run(run.run_id)).status == "success"
