"""A run's final read of its thread is answered from the checkpoints it put (`_own_puts`).

When a run's graph ends, the worker reads the thread's newest root checkpoint and its pending
writes for the run's outcome (values, interrupts, next). They are what the attempt itself just put,
so the read is answered from them without asking the saver's database: one round trip less at the
end of every run. On each store with its own saver, the answer must be exactly what the database
returns (checkpoint, metadata, parent, pending writes in the savers' order); and the database is
asked whenever the tracker is unsure (a put failed or is under way, or another thread is read).
"""

from __future__ import annotations

import contextlib
import operator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

from runplane.runtime.checkpointer import answering_from_own_puts, track_own_puts
from tests._reads import deployment, execute_once, reads_reaching_the_saver, saver_class_under_fence

STORES = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    fan: Annotated[list[str], operator.add]
    answer: str


async def _first(state: State) -> State:
    return {"log": ["first"]}


def _spread(state: State) -> list[Send]:
    return [Send("leaf", {"log": [name]}) for name in ("b", "a", "c")]


async def _leaf(state: State) -> State:
    return {"fan": [state["log"][-1]]}


async def _ask(state: State) -> State:
    return {"answer": str(interrupt({"question": "go on?", "seen": len(state.get("fan", []))}))}


async def _fail(state: State) -> State:
    raise ValueError("the node failed")


def _graph(last: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("first", _first)
    builder.add_node("leaf", _leaf)
    builder.add_node("last", last)
    builder.add_edge(START, "first")
    builder.add_conditional_edges("first", _spread, ["leaf"])
    builder.add_edge("leaf", "last")
    builder.add_edge("last", END)
    return builder


def _nested() -> Any:
    """`first`, then a subgraph that asks: the subgraph checkpoints in its own namespace, and the
    root keeps the interrupt as a pending write of the subgraph's task."""
    inner = StateGraph(State)
    inner.add_node("ask", _ask)
    inner.add_edge(START, "ask")
    inner.add_edge("ask", END)
    outer = StateGraph(State)
    outer.add_node("first", _first)
    outer.add_node("inner", inner.compile())
    outer.add_edge(START, "first")
    outer.add_edge("first", "inner")
    outer.add_edge("inner", END)
    return outer


GRAPHS = {
    "asks": _graph(_ask).compile(name="asks"),
    "fails": _graph(_fail).compile(name="fails"),
    "nested": _nested().compile(name="nested"),
}


def _root(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def _comparable(found: CheckpointTuple | None) -> Any:
    assert found is not None
    checkpoint = found.checkpoint
    return (
        found.config,
        found.parent_config,
        found.metadata,
        checkpoint["id"],
        checkpoint["channel_versions"],
        {k: v for k, v in checkpoint["channel_values"].items() if v is not None},
        found.pending_writes,
    )


async def _from_database(saver: BaseCheckpointSaver[Any], thread_id: str) -> CheckpointTuple | None:
    found: CheckpointTuple | None = await saver_class_under_fence(saver).aget_tuple(saver, _root(thread_id))
    return found


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("graph_id", ["asks", "fails", "nested"])
async def test_the_answer_is_what_the_database_returns(kind: str, graph_id: str, tmp_path: Path) -> None:
    """Fan-out writes returned out of order, an interrupt's or an error's special writes, a
    subgraph's interrupt: the tracker answers as the saver's own read does. A second run resumes
    (a new checkpoint: answered again) or fails again (its writes go on the old checkpoint and it
    puts none: the database is asked)."""
    async with deployment(kind, tmp_path, GRAPHS) as (_, runtime):
        saver = runtime.checkpointer
        graph = GRAPHS[graph_id].copy(update={"checkpointer": saver})
        config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
        for second in (False, True):
            track_own_puts("t1")
            with contextlib.suppress(ValueError):
                await graph.ainvoke(Command(resume="yes") if second else {"log": ["start"]}, config)
            with answering_from_own_puts(), reads_reaching_the_saver(saver) as reads:
                answered = await saver.aget_tuple(_root("t1"))
            stored = await _from_database(saver, "t1")
            assert _comparable(answered) == _comparable(stored)
            assert answered is not None
            if not second:
                assert reads == [] and answered.pending_writes  # the interrupt or error, and leaves
            elif graph_id != "fails":
                assert reads == [] and answered.checkpoint["channel_values"]["answer"] == "yes"
            else:
                assert len(reads) == 1
        snapshot = await graph.aget_state(config)
        assert snapshot.next == (("last",) if graph_id == "fails" else ())


@pytest.mark.parametrize("kind", STORES)
async def test_a_run_reads_nothing_at_its_end_and_its_outcome_is_the_threads_state(
    kind: str, tmp_path: Path
) -> None:
    async with deployment(kind, tmp_path, GRAPHS) as (manager, runtime):
        thread = await manager.create_thread()
        _, outcome, reads = await execute_once(manager, runtime, thread.thread_id, "asks")
        # The first read was answered by the savepoint of the new thread, the last by the puts.
        assert reads == []
        assert outcome.status == "success" and outcome.thread_status == "interrupted"
        state = await runtime.get_state("asks", thread.thread_id)
        assert outcome.thread_values is not None and outcome.thread_values == state["values"]
        assert sorted(outcome.thread_values["fan"]) == ["a", "b", "c"]
        [(_, interrupts)] = outcome.thread_interrupts.items()
        assert interrupts[0]["value"] == {"question": "go on?", "seen": 3}


async def test_it_asks_the_database_when_unsure_or_not_asked_for_its_own_latest() -> None:
    from runplane.runtime.checkpointer.memory import FencedMemorySaver

    saver = FencedMemorySaver()
    graph = GRAPHS["asks"].copy(update={"checkpointer": saver})
    track_own_puts("t1")
    await graph.ainvoke({"log": ["start"]}, {"configurable": {"thread_id": "t1"}})
    latest = await _from_database(saver, "t1")
    assert latest is not None and latest.parent_config is not None
    with reads_reaching_the_saver(saver) as reads:
        await saver.aget_tuple(_root("t1"))  # outside `answering_from_own_puts`
        assert len(reads) == 1
        with answering_from_own_puts():
            await saver.aget_tuple(_root("t1"))
            assert len(reads) == 1
            await saver.aget_tuple(_root("t2"))  # another thread
            subgraph: RunnableConfig = {"configurable": {"thread_id": "t1", "checkpoint_ns": "leaf:x"}}
            await saver.aget_tuple(subgraph)
            assert len(reads) == 3
            await saver.aget_tuple(latest.parent_config)  # an older checkpoint
            assert len(reads) == 4

        failing = saver_class_under_fence(saver).aput_writes

        async def fails(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("the database went away")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(saver_class_under_fence(saver), "aput_writes", fails)
            with pytest.raises(ConnectionError):
                await saver.aput_writes(latest.config, [("answer", "late")], "task")
        assert failing is saver_class_under_fence(saver).aput_writes
        with answering_from_own_puts():
            await saver.aget_tuple(_root("t1"))  # did the failed write land? the database knows
        assert len(reads) == 5
