"""Thread state over each checkpointer: read, update, history, copy, delete (SDK-shaped JSON)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command

from runplane.runtime.graphs import LangGraphRuntime
from tests.integration._worker_support import GRAPHS, open_saver


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LangGraphRuntime]:
    saver: BaseCheckpointSaver[Any]
    async with open_saver(request.param, tmp_path) as saver:
        yield LangGraphRuntime(GRAPHS, saver)


async def run_graph(runtime: LangGraphRuntime, graph_id: str, thread_id: str, value: Any) -> Any:
    graph = await runtime.get_graph(graph_id)
    return await graph.ainvoke(value, {"configurable": {"thread_id": thread_id}})


async def test_state_of_an_unknown_thread_is_empty(runtime: LangGraphRuntime) -> None:
    state = await runtime.get_state("echo", "nobody")
    assert state["values"] == {} and state["next"] == [] and state["checkpoint"] is None
    assert await runtime.get_history("echo", "nobody") == []


async def test_interrupted_state_and_json_shape(runtime: LangGraphRuntime) -> None:
    await run_graph(runtime, "hitl", "t1", {"question": "why?"})
    state = await runtime.get_state("hitl", "t1")
    orjson.dumps(state)  # plain JSON all the way down
    assert state["values"] == {"question": "why?"} and state["next"] == ["ask"]
    [task] = state["tasks"]
    assert task["name"] == "ask" and task["interrupts"][0]["value"] == {"question": "why?"}
    assert state["interrupts"] == task["interrupts"]
    assert state["checkpoint"]["thread_id"] == "t1" and state["checkpoint"]["checkpoint_ns"] == ""
    assert state["checkpoint_id"] == state["checkpoint"]["checkpoint_id"]
    assert state["parent_checkpoint"]["checkpoint_id"] == state["parent_checkpoint_id"]


async def test_update_state_then_history(runtime: LangGraphRuntime) -> None:
    await run_graph(runtime, "echo", "t2", {"n": 1})
    written = await runtime.update_state("echo", "t2", {"n": 42}, as_node="echo")
    assert written["checkpoint"]["thread_id"] == "t2"
    state = await runtime.get_state("echo", "t2")
    assert state["values"]["n"] == 42 and state["checkpoint"] == written["checkpoint"]

    history = await runtime.get_history("echo", "t2", limit=10)
    assert history[0]["checkpoint"] == written["checkpoint"]  # newest first
    assert [h["values"].get("n") for h in history] == [42, 1, 1, None]
    assert len(await runtime.get_history("echo", "t2", limit=2)) == 2
    older = await runtime.get_history("echo", "t2", before=history[1]["checkpoint"]["checkpoint_id"])
    assert [h["checkpoint"] for h in older] == [h["checkpoint"] for h in history[2:]]
    inputs = await runtime.get_history("echo", "t2", metadata={"source": "input"})
    assert [h["metadata"]["source"] for h in inputs] == ["input"]

    past = await runtime.get_state("echo", "t2", checkpoint_id=history[1]["checkpoint"]["checkpoint_id"])
    assert past["values"]["n"] == 1


async def test_copy_then_delete_thread(runtime: LangGraphRuntime) -> None:
    await run_graph(runtime, "hitl", "source", {"question": "copy me?"})
    await runtime.copy_thread("source", "target")
    source, target = await runtime.get_state("hitl", "source"), await runtime.get_state("hitl", "target")
    assert target["values"] == source["values"] and target["next"] == source["next"] == ["ask"]
    assert target["checkpoint"]["checkpoint_id"] == source["checkpoint"]["checkpoint_id"]
    assert target["checkpoint"]["thread_id"] == "target"
    assert len(await runtime.get_history("hitl", "target")) == len(
        await runtime.get_history("hitl", "source")
    )

    # The copy is a thread of its own: resuming it leaves the source untouched.
    graph = await runtime.get_graph("hitl")
    await graph.ainvoke(Command(resume="yes"), {"configurable": {"thread_id": "target"}})
    assert (await runtime.get_state("hitl", "target"))["values"]["answer"] == "yes"
    assert (await runtime.get_state("hitl", "source"))["next"] == ["ask"]

    await runtime.delete_thread("source")
    assert (await runtime.get_state("hitl", "source"))["checkpoint"] is None
    assert (await runtime.get_state("hitl", "target"))["values"]["answer"] == "yes"


async def test_failed_task_error_is_its_repr(runtime: LangGraphRuntime) -> None:
    with pytest.raises(ValueError, match="boom"):
        await run_graph(runtime, "failer", "t3", {"x": 1})
    state = await runtime.get_state("failer", "t3")
    assert state["next"] == ["fail"]
    assert state["tasks"][0]["error"] == "ValueError('boom!')"  # as LangGraph's server shows it
