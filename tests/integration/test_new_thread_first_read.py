"""A run's first read of a new thread is answered by its savepoint (`checkpointer.no_checkpoint_yet`).

The savepoint a run takes before its graph starts has just found that the thread has no checkpoint;
LangGraph's first `aget_tuple` would find none either. It is answered without asking the saver's
database (a round trip on PostgreSQL, for the first run of every thread), and only that one read:
the run's later reads, and the next run's, reach the database. On each store with its own saver.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from runplane.core.manager import RunManager
from runplane.runtime.graphs import LangGraphRuntime
from tests._reads import deployment, execute_once, reads_reaching_the_saver


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


async def _step(state: LogState, config: RunnableConfig) -> LogState:
    return {"log": [str(config["configurable"]["run_id"])]}


_builder = StateGraph(LogState)
_builder.add_node("step", _step)
_builder.add_edge(START, "step")
_builder.add_edge("step", END)
logging_graph = _builder.compile(name="log")


async def _run_once(manager: RunManager, runtime: LangGraphRuntime, thread_id: str) -> int:
    """Run the graph once on `thread_id` as a worker does; the root reads it made of the saver."""
    claimed, outcome, reads = await execute_once(manager, runtime, thread_id, "log")
    assert outcome.status == "success", outcome.error
    await manager.finish(claimed, outcome)
    return sum(1 for config in reads if not config["configurable"].get("checkpoint_ns"))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
async def test_the_first_run_of_a_thread_skips_one_read_and_only_that_one(kind: str, tmp_path: Path) -> None:
    async with deployment(kind, tmp_path, {"log": logging_graph}) as (manager, runtime):
        thread = await manager.create_thread()
        first = await _run_once(manager, runtime, thread.thread_id)
        second = await _run_once(manager, runtime, thread.thread_id)
        assert first == second - 1
        state = await runtime.get_state("log", thread.thread_id)
        assert len(state["values"]["log"]) == 2  # the second run started from the first's state


async def test_the_answer_holds_for_one_read_of_that_thread_before_any_write() -> None:
    from runplane.runtime.checkpointer import no_checkpoint_yet
    from runplane.runtime.checkpointer.memory import FencedMemorySaver

    saver = FencedMemorySaver()
    root: RunnableConfig = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
    with reads_reaching_the_saver(saver) as reads:
        no_checkpoint_yet("t1")
        assert await saver.aget_tuple(root) is None
        assert await saver.aget_tuple(root) is None
        assert len(reads) == 1  # the second read asks the saver

        no_checkpoint_yet("t1")
        other: RunnableConfig = {"configurable": {"thread_id": "t2", "checkpoint_ns": ""}}
        await saver.aget_tuple(other)  # another thread's read: asked, and it ends the answer
        await saver.aget_tuple(root)
        assert len(reads) == 3

        no_checkpoint_yet("t1")
        await saver.aput_writes({"configurable": {**root["configurable"], "checkpoint_id": "c1"}}, [], "task")
        await saver.aget_tuple(root)  # after a write: asked
        assert len(reads) == 4
