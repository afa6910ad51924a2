"""Graphs and helpers for the worker tests: a worker over the in-memory store, bus and saver."""

from __future__ import annotations

import asyncio
import json
import operator
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

from runplane.core.events import StreamEvent
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Claimed, Run
from runplane.demo.graphs import chat, echo, hitl, slow
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import FakeClock, memory_manager
from runplane.worker import Worker
from tests._services import (
    postgres_database,
)

# -- extra graphs ----------------------------------------------------------------------------------


class XState(TypedDict, total=False):
    x: int


async def _fail(state: XState) -> XState:
    raise ValueError("boom!")


_failer = StateGraph(XState)
_failer.add_node("fail", _fail)
_failer.add_edge(START, "fail")
_failer.add_edge("fail", END)
failer = _failer.compile(name="failer")


async def _inner(state: XState) -> XState:
    get_stream_writer()({"inner": 1})
    return {"x": state.get("x", 0) + 1}


_child = StateGraph(XState)
_child.add_node("inner_node", _inner)
_child.add_edge(START, "inner_node")
_child.add_edge("inner_node", END)

_nested = StateGraph(XState)
_nested.add_node("child", _child.compile())
_nested.add_edge(START, "child")
_nested.add_edge("child", END)
nested = _nested.compile(name="nested")


class GateState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


#: Opened by a test to let the `gated` graph's second step finish.
GATE: dict[str, asyncio.Event] = {}


async def _first(state: GateState) -> GateState:
    return {"log": ["first"]}


async def _second(state: GateState) -> GateState:
    get_stream_writer()({"waiting": True})
    await GATE.setdefault("second", asyncio.Event()).wait()
    return {"log": ["second"]}


_gated = StateGraph(GateState)
_gated.add_node("first", _first)
_gated.add_node("second", _second)
_gated.add_edge(START, "first")
_gated.add_edge("first", "second")
_gated.add_edge("second", END)
gated = _gated.compile(name="gated")

#: Set by the `blocker` graph when its node was cancelled (it never ends by itself).
STOPPED: list[str] = []


async def _block(state: GateState) -> GateState:
    get_stream_writer()({"blocking": True})
    try:
        await asyncio.Event().wait()
    finally:
        STOPPED.append("blocker")
        GATE.setdefault("stopped", asyncio.Event()).set()
    return {}


_blocker = StateGraph(GateState)
_blocker.add_node("first", _first)
_blocker.add_node("block", _block)
_blocker.add_edge(START, "first")
_blocker.add_edge("first", "block")
_blocker.add_edge("block", END)
blocker = _blocker.compile(name="blocker")


class AskState(TypedDict, total=False):
    answer: Any
    log: Annotated[list[str], operator.add]


async def _ask(state: AskState) -> AskState:
    return {"answer": interrupt("answer?")}


_hitl_gated = StateGraph(AskState)
_hitl_gated.add_node("ask", _ask)
_hitl_gated.add_node("second", _second)
_hitl_gated.add_edge(START, "ask")
_hitl_gated.add_edge("ask", "second")
_hitl_gated.add_edge("second", END)
hitl_gated = _hitl_gated.compile(name="hitl_gated")


class BurstState(TypedDict, total=False):
    count: int


async def _burst(state: BurstState) -> BurstState:
    writer = get_stream_writer()
    for i in range(state.get("count", 0)):  # no await in between: one backlog for `astream`
        writer({"i": i})
    return {}


_bursty = StateGraph(BurstState)
_bursty.add_node("burst", _burst)
_bursty.add_edge(START, "burst")
_bursty.add_edge("burst", END)
bursty = _bursty.compile(name="bursty")

GRAPHS = {
    "bursty": bursty,
    "echo": echo,
    "chat": chat,
    "slow": slow,
    "hitl": hitl,
    "failer": failer,
    "nested": nested,
    "gated": gated,
    "blocker": blocker,
    "hitl_gated": hitl_gated,
}


# -- harness --------------------------------------------------------------------------------------


@dataclass
class Harness:
    manager: RunManager
    runtime: LangGraphRuntime
    worker: Worker
    clock: FakeClock | None

    async def thread(self) -> str:
        return (await self.manager.create_thread()).thread_id

    async def run(self, graph_id: str, thread_id: str | None = None, **kwargs: Any) -> Run:
        """Create a run of `graph_id` (kwargs go to `RunKwargs`; `multitask_strategy` is split off)."""
        strategy = kwargs.pop("multitask_strategy", "enqueue")
        thread_id = thread_id or await self.thread()
        return await self.manager.create_run(
            thread_id, graph_id, kwargs={"graph_id": graph_id, **kwargs}, multitask_strategy=strategy
        )

    async def events(self, run: Run) -> list[StreamEvent]:
        """Every event of the run's stream, until it ends."""
        return [event async for event in await self.manager.stream_run(run.run_id)]

    async def until(self, run: Run, event: str, predicate: Any = None) -> StreamEvent:
        """Wait for the first event named `event` (whose decoded data satisfies `predicate`)."""
        async for item in await self.manager.stream_run(run.run_id):
            if item.event == event and (predicate is None or predicate(json.loads(item.data))):
                return item
        raise AssertionError(f"run {run.run_id} ended without a {event!r} event")

    async def done(self, run: Run) -> Run | None:
        return await self.manager.wait_for_run(run.run_id, timeout=10)

    async def checkpoints(self, thread_id: str) -> list[str]:
        """Ids of the thread's root checkpoints, oldest first."""
        config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        return sorted(
            [c.config["configurable"]["checkpoint_id"] async for c in self.runtime.checkpointer.alist(config)]
        )


class Claims:
    """Every claim the harness's worker makes, through the manager's one door."""

    def __init__(self, h: Harness) -> None:
        self.seen: list[Claimed] = []
        self.made = asyncio.Event()
        self._claim = h.manager.claim_and_look
        h.manager.claim_and_look = self._counted  # type: ignore[method-assign]

    async def _counted(self, worker_id: str) -> Claimed:
        claimed = await self._claim(worker_id)
        self.seen.append(claimed)
        self.made.set()
        return claimed

    @property
    def empty(self) -> int:
        return sum(claimed.run is None for claimed in self.seen)

    @property
    def runs(self) -> list[str]:
        """The ids of the runs claimed, in order."""
        return [claimed.run.run_id for claimed in self.seen if claimed.run is not None]


@asynccontextmanager
async def harness(
    *,
    start: bool = True,
    clock: FakeClock | None = None,
    settings: ManagerSettings | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    **worker_options: Any,
) -> AsyncIterator[Harness]:
    manager = memory_manager(clock=clock, settings=settings)
    runtime = LangGraphRuntime(GRAPHS, checkpointer or InMemorySaver())
    worker_options.setdefault("shutdown_grace", 1.0)
    worker = Worker(manager, runtime, **worker_options)
    if start:
        await worker.start()
    try:
        yield Harness(manager, runtime, worker, clock)
    finally:
        await worker.stop()


@asynccontextmanager
async def open_saver(kind: str, tmp_path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A checkpointer of `kind` (memory, sqlite or postgres) on a fresh database."""
    if kind == "memory":
        yield InMemorySaver()
    elif kind == "sqlite":
        async with open_checkpointer(f"sqlite:///{tmp_path / 'checkpoints.db'}") as saver:
            yield saver
    else:
        with postgres_database() as url:
            async with open_checkpointer(url) as saver:
                yield saver


def decode(event: StreamEvent) -> Any:
    return json.loads(event.data)
