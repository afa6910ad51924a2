"""The library API (`runplane.open`, `rp.runs`, `rp.threads`, `runplane.testing`, `runplane.sync`).

The first four tests are the defects of an in-process run manager like deer-flow's (runs kept in a
dict, admission under an `asyncio.Lock`, cancels held in memory), each shown fixed through the
library: history after a restart, a cancel that persists and crosses processes, admission decided
by the database for two runtimes at once, and memory that does not grow with the number of runs.
"""

from __future__ import annotations

import asyncio
import gc
import operator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import START, StateGraph

import runplane
from runplane import sync as runplane_sync
from runplane.testing import FakeClock, memory_runtime
from tests._services import postgres_database
from tests.embedding._support import EXAMPLE, until


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    gate: str


async def step(state: State) -> State:
    gate = state.get("gate")
    while gate and not await asyncio.to_thread(Path(gate).exists):  # noqa: ASYNC110 - a file
        await asyncio.sleep(0.02)
    return {"log": ["step"], "gate": ""}


def graph() -> StateGraph[Any]:
    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    return builder


GRAPHS = {"agent": graph()}


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'library.db'}"


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS) as rp:
        thread = await rp.threads.create(user="alice")
        first = await rp.runs.create(thread.thread_id, "agent", user="alice", input={"log": ["a"]})
        await rp.runs.join(first.run_id, user="alice")
        second = await rp.runs.create(thread.thread_id, "agent", user="alice", input={"log": ["b"]})
        await rp.runs.join(second.run_id, user="alice")
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS) as rp:
        runs = await rp.runs.list(thread.thread_id, user="alice")
        assert [(r.run_id, r.status) for r in runs] == [(second.run_id, "success"), (first.run_id, "success")]
        state = await rp.threads.state(thread.thread_id, user="alice")
        assert state["values"]["log"] == ["a", "step", "b", "step"]
        assert len(await rp.threads.history(thread.thread_id, user="alice", limit=100)) >= 4


async def test_a_cancel_is_durable_and_reaches_the_worker_of_another_runtime(tmp_path: Path) -> None:
    gate = tmp_path / "never"
    executing = runplane.open(sqlite(tmp_path), graphs=GRAPHS, workers=1, lease_seconds=1.5)
    cancelling = runplane.open(sqlite(tmp_path), graphs=GRAPHS, workers=0)
    async with executing as rp_a, cancelling as rp_b:
        thread = await rp_b.threads.create(user="alice")
        run = await rp_b.runs.create(thread.thread_id, "agent", user="alice", input={"gate": str(gate)})

        async def running() -> bool:
            return (await rp_b.runs.get(run.run_id, user="alice")).status == "running"

        await until(running, "runtime A to execute the run")
        # Runtime B shares no memory with A (its bus is its own): only the database carries this.
        requested = await rp_b.runs.cancel(run.run_id, user="alice")
        assert requested is not None and requested.cancel_action == "interrupt"
        stopped = await rp_b.runs.join(run.run_id, user="alice", timeout=30)
        assert stopped is not None and stopped.status == "interrupted"
        assert rp_a.worker is not None and rp_a.worker.cancelled == 1
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS) as rp:
        assert (await rp.runs.get(run.run_id, user="alice")).status == "interrupted"


async def test_a_pending_run_cancelled_before_a_restart_never_runs_after_it(tmp_path: Path) -> None:
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS, workers=0) as rp:
        thread = await rp.threads.create(user="alice")
        run = await rp.runs.create(thread.thread_id, "agent", user="alice", input={"log": ["x"]})
        cancelled = await rp.runs.cancel(run.run_id, user="alice")
        assert cancelled is not None and cancelled.status == "interrupted"
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS, burst=True) as rp:
        await rp.run_until_idle()
        assert (await rp.runs.get(run.run_id, user="alice")).status == "interrupted"
        assert (await rp.threads.state(thread.thread_id, user="alice"))["values"] == {}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_admission_is_decided_by_the_database_for_two_runtimes_at_once(
    tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        with postgres_database() as url:
            await _race_two_runtimes(url)
    else:
        await _race_two_runtimes(sqlite(tmp_path))


async def _race_two_runtimes(url: str) -> None:
    # Two runtimes, as two processes of a web app would have: nothing in memory is shared, so an
    # in-process lock could not keep both from admitting a run.
    async with (
        runplane.open(url, graphs=GRAPHS, workers=0) as one,
        runplane.open(url, graphs=GRAPHS, workers=0) as two,
    ):
        thread = await one.threads.create(user="alice")
        attempts = [
            (one if i % 2 else two).runs.create_or_reject(thread.thread_id, "agent", user="alice")
            for i in range(10)
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        admitted = [r for r in results if isinstance(r, runplane.Run)]
        assert len(admitted) == 1
        assert all(isinstance(r, runplane.ThreadBusy) for r in results if r not in admitted)
        assert [r.run_id for r in await two.runs.list(thread.thread_id, user="alice")] == [admitted[0].run_id]


def live_runs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, runplane.Run))


async def test_memory_does_not_grow_with_the_number_of_runs(tmp_path: Path) -> None:
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS, workers=4) as rp:
        thread = await rp.threads.create(user="alice")

        async def run_many(count: int, kept: list[runplane.Run]) -> None:
            for _ in range(count):
                run = await rp.runs.create(thread.thread_id, "agent", user="alice", input={"log": ["."]})
                kept.append(await rp.runs.get(run.run_id, user="alice"))
                await rp.runs.join(run.run_id, user="alice")

        await run_many(10, [])
        # A join returns when its run has ended; the run's worker task may still be returning, and
        # holds that one run meanwhile (at the baseline, or at the end, or both).
        ending = 1
        baseline = live_runs()
        kept: list[runplane.Run] = []  # what an in-memory run manager does: keep every record
        await run_many(100, kept)
        assert live_runs() >= baseline - ending + 100  # the measure sees records that are kept...
        kept.clear()
        # ...and runplane keeps none: the runs are in the database, not in this process.
        assert live_runs() <= baseline + ending
        assert len(await rp.runs.list(thread.thread_id, user="alice", limit=1000)) == 110


# -- every multitask strategy, in burst mode -------------------------------------------------------


async def test_each_multitask_strategy_through_the_library() -> None:
    async with memory_runtime(GRAPHS) as rp:
        thread = await rp.threads.create()
        first = await rp.runs.create(thread.thread_id, "agent", input={"log": ["1"]})
        with pytest.raises(runplane.ThreadBusy):
            await rp.runs.create(thread.thread_id, "agent", multitask_strategy="reject")
        queued = await rp.runs.create(
            thread.thread_id, "agent", input={"log": ["2"]}, multitask_strategy="enqueue"
        )
        await rp.run_until_idle()
        assert [(await rp.runs.get(r.run_id)).status for r in (first, queued)] == ["success", "success"]

        pending = await rp.runs.create(thread.thread_id, "agent", input={"log": ["3"]})
        interrupting = await rp.runs.create(
            thread.thread_id, "agent", input={"log": ["4"]}, multitask_strategy="interrupt"
        )
        assert (await rp.runs.get(pending.run_id)).status == "interrupted"
        rolling_back = await rp.runs.create(
            thread.thread_id, "agent", input={"log": ["5"]}, multitask_strategy="rollback"
        )
        with pytest.raises(runplane.NotFound):
            await rp.runs.get(interrupting.run_id)  # a rollback deletes the run it replaces
        await rp.run_until_idle()
        assert (await rp.runs.get(rolling_back.run_id)).status == "success"
        values = (await rp.threads.state(thread.thread_id))["values"]
        assert values["log"] == ["1", "step", "2", "step", "5", "step"]


async def test_a_fake_clock_decides_when_a_delayed_run_is_due() -> None:
    clock = FakeClock()
    async with memory_runtime(GRAPHS, clock=clock) as rp:
        thread = await rp.threads.create()
        run = await rp.runs.create(thread.thread_id, "agent", input={"log": ["later"]}, after_seconds=60)
        await rp.run_until_idle()
        assert (await rp.runs.get(run.run_id)).status == "pending"
        clock.advance(61)
        await rp.run_until_idle()
        assert (await rp.runs.get(run.run_id)).status == "success"


async def test_runs_are_scoped_by_the_callers_identity() -> None:
    async with memory_runtime(GRAPHS) as rp:
        thread = await rp.threads.create(user="alice")
        run = await rp.runs.create(thread.thread_id, "agent", user="alice")
        for call in (
            rp.runs.get(run.run_id, user="bob"),
            rp.runs.cancel(run.run_id, user="bob"),
            rp.runs.delete(run.run_id, user="bob"),
            rp.runs.list(thread.thread_id, user="bob"),
            rp.runs.create(thread.thread_id, "agent", user="bob"),
            rp.threads.state(thread.thread_id, user="bob"),
        ):
            with pytest.raises(runplane.NotFound):
                await call
        assert (await rp.runs.get(run.run_id, user="alice")).status == "pending"


async def test_stream_and_delete_through_the_library() -> None:
    async with memory_runtime(GRAPHS) as rp:
        thread = await rp.threads.create()
        run = await rp.runs.create(thread.thread_id, "agent", input={"log": ["s"]}, stream_mode=["updates"])
        await rp.run_until_idle()
        events = [(e.event, e.data) async for e in rp.runs.stream(run.run_id)]
        assert [name for name, _ in events] == ["metadata", "updates"]
        assert b'"step"' in events[1][1]
        await rp.runs.delete(run.run_id)
        with pytest.raises(runplane.NotFound):
            await rp.runs.get(run.run_id)


async def test_the_runtime_refuses_use_before_it_is_open_and_after_it_closed() -> None:
    rp = memory_runtime(GRAPHS)
    with pytest.raises(RuntimeError, match="not open"):
        _ = rp.runs
    async with rp:
        assert rp.manager is rp.services.manager
    with pytest.raises(RuntimeError, match="not open"):
        _ = rp.threads


def test_the_sync_facade_forwards_to_the_async_api(tmp_path: Path) -> None:
    with runplane_sync.open(sqlite(tmp_path), graphs=GRAPHS, workers=2) as rp:
        thread = rp.threads.create(user="alice")
        run = rp.runs.create(thread.thread_id, "agent", user="alice", input={"log": ["sync"]})
        finished = rp.runs.join(run.run_id, user="alice")
        assert finished.status == "success"
        assert next(e.event for e in rp.runs.stream(run.run_id, user="alice")) == "metadata"
        assert rp.threads.state(thread.thread_id, user="alice")["values"]["log"] == ["sync", "step"]
        with pytest.raises(runplane.NotFound):
            rp.runs.get(run.run_id, user="bob")


async def test_closing_drains_then_hands_an_unfinished_run_back_for_the_next_process(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS, workers=1, shutdown_grace=0.1) as rp:
        thread = await rp.threads.create()
        run = await rp.runs.create(thread.thread_id, "agent", input={"gate": str(gate)})

        async def running() -> bool:
            return (await rp.runs.get(run.run_id)).status == "running"

        await until(running, "the run to start")
    async with runplane.open(sqlite(tmp_path), graphs=GRAPHS, burst=True) as rp:
        assert (await rp.runs.get(run.run_id)).status == "pending"  # handed back, not lost or failed
        gate.touch()
        await rp.run_until_idle()
        assert (await rp.runs.get(run.run_id)).status == "success"


async def test_graphs_can_come_from_a_langgraph_json_instead() -> None:
    config = str(EXAMPLE / "langgraph.json")
    async with runplane.open("memory://", config=config, burst=True) as rp:
        thread = await rp.threads.create()
        run = await rp.runs.create(thread.thread_id, "agent", input={"messages": ["json"]})
        await rp.run_until_idle()
        assert (await rp.runs.get(run.run_id)).status == "success"
        assert (await rp.threads.state(thread.thread_id))["values"]["messages"] == ["json", "echo: json"]
    with pytest.raises(runplane.InvalidInput, match="not both"):
        async with runplane.open("memory://", config=config, graphs=GRAPHS):
            pass


async def test_a_state_update_through_the_library_is_refused_while_a_run_waits() -> None:
    async with memory_runtime(GRAPHS) as rp:
        thread = await rp.threads.create()
        with pytest.raises(runplane.InvalidInput):  # no graph ran on it: whose state would it be?
            await rp.threads.update_state(thread.thread_id, {"log": ["x"]})
        await rp.runs.create(thread.thread_id, "agent", input={"log": ["a"]})
        with pytest.raises(runplane.ThreadBusy):  # the run is pending: the update would race it
            await rp.threads.update_state(thread.thread_id, {"log": ["x"]})
        await rp.run_until_idle()
        written = await rp.threads.update_state(thread.thread_id, {"log": ["edited"]}, as_node="step")
        state = await rp.threads.state(thread.thread_id)
        assert state["checkpoint"]["checkpoint_id"] == written["checkpoint"]["checkpoint_id"]
        assert state["values"]["log"] == ["a", "step", "edited"]
        assert (await rp.threads.get(thread.thread_id)).values == state["values"]  # recorded on the thread
