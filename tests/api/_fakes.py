"""A tiny `GraphRuntime` and worker for API tests: no LangGraph, deterministic and fast.

Graphs (by graph id), driven by their input:
- `echo`: merges the input into the state; honours `interrupt_before=["echo"]`.
- `failer`: writes `{"x": 1}` then raises `ValueError("boom!")`.
- `asker`: stops at an `interrupt()` asking `{"question": ...}`; a `command.resume` answers it.
- `sleepy`: waits for `worker.gate(name).set()` (input `{"gate": name}`) or `seconds`, emitting a `custom`
  tick `{"i": n}` each time `worker.tick(name)` is called; obeys cancel requests.
- `ticker`: emits `custom` `{"i": 0..n-1}` then its values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from runplane.core.errors import CancelRequested, LeaseLost, NotFound
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.manager import RunManager
from runplane.core.models import Json, Outcome, Run, ThreadStatus

GRAPHS = ("echo", "failer", "asker", "sleepy", "ticker")
NODES = {"echo": "echo", "failer": "boom", "asker": "ask", "sleepy": "sleep", "ticker": "tick"}
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeRuntime:
    """Graph registry plus an in-memory "checkpointer": a list of states per thread."""

    def __init__(self) -> None:
        self._assistants = {
            default_assistant_id(g): Assistant(
                assistant_id=default_assistant_id(g),
                graph_id=g,
                name=g,
                created_at=_EPOCH.replace(minute=i),
                updated_at=_EPOCH.replace(minute=i),
                metadata={"created_by": "system"},
            )
            for i, g in enumerate(GRAPHS)
        }
        self.checkpoints: dict[str, list[Json]] = {}
        self._ids = itertools.count(1)

    # -- registry --------------------------------------------------------------------------------

    def assistants(self) -> list[Assistant]:
        return list(self._assistants.values())

    def resolve(self, assistant_id: str) -> Assistant:
        if assistant_id in self._assistants:
            return self._assistants[assistant_id]
        for assistant in self._assistants.values():
            if assistant.graph_id == assistant_id:
                return assistant
        raise NotFound(f"assistant {assistant_id} not found")

    async def get_graph(self, graph_id: str, config: Json | None = None) -> Any:
        return graph_id

    # -- state -----------------------------------------------------------------------------------

    def write(
        self,
        thread_id: str,
        values: Json,
        *,
        pending: Iterable[str] = (),
        interrupts: Iterable[Json] = (),
        run_id: str | None = None,
        source: str = "loop",
    ) -> Json:
        history = self.checkpoints.setdefault(thread_id, [])
        parent = history[-1]["checkpoint"] if history else None
        checkpoint_id = f"00000000-0000-0000-0000-{next(self._ids):012d}"
        pending = list(pending)
        interrupt_list = list(interrupts)
        state = {
            "values": values,
            "next": pending,
            "tasks": [
                {"id": f"task-{node}", "name": node, "error": None, "interrupts": interrupt_list}
                for node in pending
            ],
            "metadata": {"source": source, "step": len(history), "run_id": run_id},
            "created_at": _EPOCH.isoformat(),
            "checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id},
            "parent_checkpoint": parent,
            "interrupts": interrupt_list,
            "checkpoint_id": checkpoint_id,
            "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
        }
        history.append(state)
        return state

    def values(self, thread_id: str) -> Json:
        history = self.checkpoints.get(thread_id)
        return dict(history[-1]["values"]) if history else {}

    async def get_state(
        self,
        graph_id: str,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        checkpoint_ns: str = "",
        subgraphs: bool = False,
    ) -> Json:
        for state in reversed(self.checkpoints.get(thread_id, [])):
            if checkpoint_id is None or state["checkpoint_id"] == checkpoint_id:
                return state
        return {
            "values": {},
            "next": [],
            "tasks": [],
            "metadata": None,
            "created_at": None,
            "checkpoint": None,
            "parent_checkpoint": None,
            "interrupts": [],
        }

    async def update_state(
        self,
        graph_id: str,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Json:
        if as_node is not None and as_node != NODES[graph_id]:
            raise ValueError(f"Node {as_node} does not exist")
        merged = {**self.values(thread_id), **(values or {})}
        # Like LangGraph: an update on a fresh thread leaves the graph's first node to run.
        pending = [] if as_node is not None else [NODES[graph_id]]
        state = self.write(thread_id, merged, pending=pending, source="update")
        return {"checkpoint": state["checkpoint"]}

    async def bulk_update_state(self, graph_id: str, thread_id: str, supersteps: list[Json]) -> Json:
        result: Json = {}
        for superstep in supersteps:
            for update in superstep.get("updates") or ():
                result = await self.update_state(
                    graph_id, thread_id, update.get("values"), as_node=update.get("as_node")
                )
        return result

    async def get_history(
        self,
        graph_id: str,
        thread_id: str,
        *,
        limit: int = 10,
        before: str | None = None,
        metadata: Json | None = None,
        checkpoint_id: str | None = None,
    ) -> list[Json]:
        states = list(reversed(self.checkpoints.get(thread_id, [])))
        if before is not None:
            ids = [s["checkpoint_id"] for s in states]
            states = states[ids.index(before) + 1 :] if before in ids else []
        if metadata:
            states = [s for s in states if all(s["metadata"].get(k) == v for k, v in metadata.items())]
        return states[:limit]

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.checkpoints[target_thread_id] = [dict(s) for s in self.checkpoints.get(source_thread_id, [])]

    async def delete_thread(self, thread_id: str) -> None:
        self.checkpoints.pop(thread_id, None)

    async def thread_storage(self, thread_id: str) -> Json:
        history = self.checkpoints.get(thread_id, [])
        size = sum(len(orjson.dumps(state)) for state in history)
        return {
            "total_bytes": size,
            "checkpoints": {"count": len(history), "bytes": size},
            "channel_values": {"count": 0, "bytes": 0, "by_channel": {}},
            "pending_writes": {"count": 0, "bytes": 0},
        }

    async def prune_checkpoints(self, thread_id: str) -> None:
        history = self.checkpoints.get(thread_id)
        if history:
            self.checkpoints[thread_id] = history[-1:]

    def discard_run(self, thread_id: str, run_id: str) -> None:
        history = self.checkpoints.get(thread_id, [])
        self.checkpoints[thread_id] = [s for s in history if s["metadata"].get("run_id") != run_id]

    async def graph_schemas(self, graph_id: str) -> Json:
        schema = {"type": "object", "title": f"{graph_id}_state", "properties": {}}
        return {
            "input_schema": schema,
            "output_schema": schema,
            "state_schema": schema,
            "config_schema": {},
            "context_schema": None,
        }

    async def graph_drawable(self, graph_id: str, *, xray: bool | int = False) -> Json:
        node = NODES[graph_id]
        return {
            "nodes": [{"id": "__start__"}, {"id": node}, {"id": "__end__"}],
            "edges": [{"source": "__start__", "target": node}, {"source": node, "target": "__end__"}],
        }


class _Cancelled(Exception):
    def __init__(self, action: str) -> None:
        self.action = action


class FakeWorker:
    """Claims runs as soon as they are admitted and executes the fake graphs, each in its own task."""

    def __init__(self, manager: RunManager, runtime: FakeRuntime, *, worker_id: str = "fake") -> None:
        self.manager = manager
        self.runtime = runtime
        self.worker_id = worker_id
        self._gates: dict[str, asyncio.Event] = {}
        self._ticks: dict[str, asyncio.Queue[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.Task[None] | None = None
        self.started_runs: list[str] = []

    def gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    def tick(self, name: str) -> None:
        self._ticks.setdefault(name, asyncio.Queue()).put_nowait(None)

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._claim_forever())

    async def stop(self) -> None:
        for task in [*self._tasks, *([self._loop] if self._loop else [])]:
            task.cancel()
        for task in [*self._tasks, *([self._loop] if self._loop else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run_until_idle(self) -> None:
        while await self._claim_one():
            pass
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claim_one(self) -> bool:
        run = await self.manager.claim(self.worker_id)
        if run is None:
            return False
        self.started_runs.append(run.run_id)
        task = asyncio.create_task(self._execute(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _claim_forever(self) -> None:
        while True:
            while await self._claim_one():
                pass
            await asyncio.sleep(0.002)

    # -- execution -------------------------------------------------------------------------------

    async def _publish(self, run: Run, event: str, payload: Any) -> None:
        await self.manager.publish(run, event, orjson.dumps(payload))

    async def _emit(self, run: Run, mode: str, payload: Any) -> None:
        if mode in run.kwargs.stream_mode:
            await self._publish(run, mode, payload)

    async def _check_cancel(self, run: Run) -> None:
        action = await self.manager.renew(run, self.worker_id)
        if action is not None:
            raise _Cancelled(action)

    async def _execute(self, run: Run) -> None:
        try:
            await self._publish(run, "metadata", {"run_id": run.run_id, "attempt": run.attempt})
            try:
                outcome = await self._graph(run)
                try:
                    await self.manager.finish(run, outcome)
                except CancelRequested as exc:
                    raise _Cancelled(exc.action) from None
            except _Cancelled as cancelled:
                if cancelled.action == "rollback":
                    self.runtime.discard_run(run.thread_id, run.run_id)
                    await self.manager.discard(run)
                else:
                    values = self.runtime.values(run.thread_id)
                    await self.manager.finish(
                        run, Outcome("interrupted", "interrupted", thread_values=values)
                    )
            if run.kwargs.temporary:
                await self.manager.delete_thread(run.thread_id, run.owner)
                await self.runtime.delete_thread(run.thread_id)
        except (LeaseLost, NotFound):
            pass  # the thread was deleted under the run

    async def _graph(self, run: Run) -> Outcome:
        graph_id = run.kwargs.graph_id
        kwargs = run.kwargs
        given = kwargs.input
        given = given if isinstance(given, dict) else {}
        thread_id = run.thread_id
        values = {**self.runtime.values(thread_id), **given}

        def done(status: ThreadStatus = "idle", **extra: Any) -> Outcome:
            return Outcome("success", status, thread_values=values, **extra)

        if graph_id == "echo":
            await self._emit(run, "values", values)
            stop = kwargs.interrupt_before
            if stop == "*" or (isinstance(stop, list) and "echo" in stop):
                self.runtime.write(thread_id, values, pending=["echo"], run_id=run.run_id)
                await self._emit(run, "updates", {"__interrupt__": []})
                return done("interrupted")
            values = {**values, "echoed": True}
            self.runtime.write(thread_id, values, run_id=run.run_id)
            await self._emit(run, "updates", {"echo": values})
            await self._emit(run, "values", values)
            return done()
        if graph_id == "failer":
            values = {**values, "x": 1}
            self.runtime.write(thread_id, values, pending=["boom"], run_id=run.run_id)
            await self._emit(run, "values", values)
            await self._publish(run, "error", {"error": "ValueError", "message": "boom!"})
            return Outcome("error", "error", error="ValueError: boom!", thread_values=values)
        if graph_id == "asker":
            command = kwargs.command or {}
            if "resume" in command:
                values = {**values, "answer": command["resume"]}
                self.runtime.write(thread_id, values, run_id=run.run_id)
                await self._emit(run, "values", values)
                return done()
            interrupt = {"value": {"question": values.get("q", "?")}, "id": "interrupt-1"}
            self.runtime.write(thread_id, values, pending=["ask"], interrupts=[interrupt], run_id=run.run_id)
            await self._emit(run, "values", values)
            wire = [{**interrupt, "response_schema": None}]
            await self._emit(run, "updates", {"__interrupt__": wire})
            await self._emit(run, "values", {**values, "__interrupt__": wire})
            return done("interrupted", thread_interrupts={"task-ask": [interrupt]})
        if graph_id == "sleepy":
            await self._emit(run, "values", values)
            self.runtime.write(thread_id, values, pending=["sleep"], run_id=run.run_id)
            gate_name = given.get("gate")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + float(given.get("seconds", 3600))
            ticks = self._ticks.setdefault(str(gate_name), asyncio.Queue())
            sent = 0
            while loop.time() < deadline and not (gate_name and self.gate(gate_name).is_set()):
                await self._check_cancel(run)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.005):
                        await ticks.get()
                        await self._emit(run, "custom", {"i": sent})
                        sent += 1
            await self._check_cancel(run)
            values = {**values, "slept": True}
            self.runtime.write(thread_id, values, run_id=run.run_id)
            await self._emit(run, "values", values)
            return done()
        if graph_id == "ticker":
            await self._emit(run, "values", values)
            for i in range(int(given.get("n", 3))):
                await self._emit(run, "custom", {"i": i})
            values = {**values, "ticks": int(given.get("n", 3))}
            self.runtime.write(thread_id, values, run_id=run.run_id)
            await self._emit(run, "values", values)
            return done()
        raise AssertionError(f"unknown graph {graph_id}")
