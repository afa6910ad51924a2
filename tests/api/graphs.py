"""Real LangGraph graphs for the API tests, and the gates a test opens to let `sleepy` finish.

Each graph's state is one dict merged by key (a root channel with a merge reducer), so any input
lands in the thread's values as given. The graphs (by graph id), driven by their input:

- `echo`: merges the input into the state, then its node `echo` adds `{"echoed": True}`.
- `failer`: node `set` writes `{"x": 1}`, then node `boom` raises `ValueError("boom!")`.
- `asker`: node `ask` stops at an `interrupt({"question": q})`; a `command.resume` answers it
  (`{"answer": ...}`).
- `sleepy`: node `sleep` waits until the test opens the gate named by the input's `gate`,
  emitting a `custom` `{"i": n}` for each tick the test sends, then adds `{"slept": True}`. It is
  cancelled like any node when its run is (a gate never opened: the worker hands the run back
  when it stops at the end of the test).
- `ticker`: node `tick` emits `custom` `{"i": 0..n-1}`, then adds `{"ticks": n}`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from langgraph.types import interrupt

State = dict[str, Any]


def _merge(current: State | None, update: State | None) -> State:
    return {**(current or {}), **(update or {})}


class Gates:
    """What a test does to the `sleepy` runs, by gate name: let them finish (`open`), make them emit
    a tick (`tick`), and wait until one of them is waiting at its gate (`entered`).

    An open gate stays open: a later `sleepy` run on it passes straight through.
    """

    def __init__(self) -> None:
        self._opened: dict[str, asyncio.Event] = {}
        self._entered: dict[str, asyncio.Event] = {}
        self._ticks: dict[str, asyncio.Queue[None]] = {}

    def open(self, name: str) -> None:
        self._gate(name).set()

    def tick(self, name: str) -> None:
        self._queue(name).put_nowait(None)

    async def entered(self, name: str) -> None:
        """Return once a `sleepy` run is waiting at gate `name` (its run is running)."""
        await self._entered.setdefault(name, asyncio.Event()).wait()

    def _gate(self, name: str) -> asyncio.Event:
        return self._opened.setdefault(name, asyncio.Event())

    def _queue(self, name: str) -> asyncio.Queue[None]:
        return self._ticks.setdefault(name, asyncio.Queue())

    async def wait(self, name: str) -> None:
        """The `sleep` node's part: wait for the gate to open, emitting a `custom` event per tick."""
        gate, ticks = self._gate(name), self._queue(name)
        write = get_stream_writer()
        self._entered.setdefault(name, asyncio.Event()).set()
        sent = 0
        while not gate.is_set():
            opened = asyncio.ensure_future(gate.wait())
            ticked = asyncio.ensure_future(ticks.get())
            try:
                await asyncio.wait({opened, ticked}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                opened.cancel()
                ticked.cancel()
            if ticked.done() and not ticked.cancelled():
                write({"i": sent})
                sent += 1


def _graph(*nodes: tuple[str, Any]) -> StateGraph[Any]:
    """A chain of `nodes` over the merged-dict state."""
    builder: StateGraph[Any] = StateGraph(Annotated[State, _merge])  # type: ignore[arg-type]
    previous = START
    for name, node in nodes:
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


def api_graphs(gates: Gates) -> dict[str, Pregel[Any, Any, Any, Any]]:
    """The test graphs by graph id; `sleepy` waits on `gates`."""

    async def echo(state: State) -> State:
        return {"echoed": True}

    async def set_x(state: State) -> State:
        return {"x": 1}

    async def boom(state: State) -> State:
        raise ValueError("boom!")

    async def ask(state: State) -> State:
        return {"answer": interrupt({"question": state.get("q", "?")})}

    async def sleep(state: State) -> State:
        await gates.wait(str(state.get("gate")))
        return {"slept": True}

    async def tick(state: State) -> State:
        write = get_stream_writer()
        n = int(state.get("n", 3))
        for i in range(n):
            write({"i": i})
        return {"ticks": n}

    return {
        "echo": _graph(("echo", echo)).compile(name="echo"),
        "failer": _graph(("set", set_x), ("boom", boom)).compile(name="failer"),
        "asker": _graph(("ask", ask)).compile(name="asker"),
        "sleepy": _graph(("sleep", sleep)).compile(name="sleepy"),
        "ticker": _graph(("tick", tick)).compile(name="ticker"),
    }
