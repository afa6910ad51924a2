"""`checkpointer.ttl` sweeps on the savers runplane opens (memory, SQLite, PostgreSQL): threads idle
past the TTL lose their checkpoints (`delete`) or all but their latest state (`keep_latest`); busy
threads and threads written since are kept. Time is moved by the sweep's `now`, not slept."""

from __future__ import annotations

import contextlib
import operator
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.base.id import uuid6
from langgraph.graph import END, START, StateGraph
from langgraph.pregel import Pregel
from typing_extensions import TypedDict

from runplane.core.errors import InvalidInput
from runplane.runtime.checkpoint_ttl import (
    CheckpointTTL,
    Strategy,
    checkpoint_id_at,
    expire_thread,
    expired_threads,
    parse_ttl,
    sweep,
)
from runplane.runtime.checkpointer import open_checkpointer
from tests._services import postgres_database


class State(TypedDict, total=False):
    items: Annotated[list[int], operator.add]


def _graph(saver: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
    def add(state: State) -> State:
        return {"items": [len(state.get("items", []))]}

    builder = StateGraph(State)
    builder.add_node("add", add)
    builder.add_edge(START, "add")
    builder.add_edge("add", END)
    return builder.compile(checkpointer=saver)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def saver(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    with contextlib.ExitStack() as databases:
        if request.param == "memory":
            url = "memory://"
        elif request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'cp.db'}"
        else:
            url = databases.enter_context(postgres_database())
        async with open_checkpointer(url) as opened:
            yield opened


async def _runs(graph: Pregel[Any, Any, Any, Any], thread_id: str, count: int) -> None:
    for _ in range(count):
        await graph.ainvoke({"items": []}, {"configurable": {"thread_id": thread_id}})


async def _history(graph: Pregel[Any, Any, Any, Any], thread_id: str) -> list[Any]:
    return [s async for s in graph.aget_state_history({"configurable": {"thread_id": thread_id}})]


TTL_MINUTES = 10.0


async def test_delete_removes_every_checkpoint_of_expired_threads(saver: BaseCheckpointSaver[Any]) -> None:
    graph = _graph(saver)
    await _runs(graph, "idle-1", 2)
    await _runs(graph, "idle-2", 1)
    ttl = CheckpointTTL(default_ttl_minutes=TTL_MINUTES, strategy="delete")
    assert await sweep(saver, ttl) == 0  # nothing is old yet
    assert await sweep(saver, ttl, now=time.time() + TTL_MINUTES * 60 + 1) == 2
    for thread_id in ("idle-1", "idle-2"):
        assert await _history(graph, thread_id) == []
        assert (await graph.aget_state({"configurable": {"thread_id": thread_id}})).values == {}
    # The thread can be used again, from scratch.
    await _runs(graph, "idle-1", 1)
    assert (await graph.aget_state({"configurable": {"thread_id": "idle-1"}})).values == {"items": [0]}


async def test_a_thread_written_since_the_cutoff_is_kept(saver: BaseCheckpointSaver[Any]) -> None:
    graph = _graph(saver)
    await _runs(graph, "old", 1)
    cutoff_time = time.time()
    await _runs(graph, "new", 1)
    swept = await sweep(
        saver, CheckpointTTL(default_ttl_minutes=TTL_MINUTES), now=cutoff_time + TTL_MINUTES * 60
    )
    assert swept == 1
    assert await _history(graph, "old") == []
    assert len(await _history(graph, "new")) == 3


@pytest.mark.parametrize("strategy", ["delete", "keep_latest"])
async def test_a_thread_written_after_it_was_found_expired_is_kept_whole(
    saver: BaseCheckpointSaver[Any], strategy: Strategy
) -> None:
    """The race between a sweep and a run on a long-idle thread: the sweep finds the thread
    expired, a run writes to it, then the sweep gets to it. The run's state must survive."""
    graph = _graph(saver)
    await _runs(graph, "t", 1)
    cutoff = checkpoint_id_at(time.time())
    assert await expired_threads(saver, cutoff, 10) == ["t"]
    await _runs(graph, "t", 1)  # the thread is used again, after the cutoff
    await expire_thread(saver, "t", cutoff, strategy)
    assert len(await _history(graph, "t")) == 6
    assert (await graph.aget_state({"configurable": {"thread_id": "t"}})).values == {"items": [0, 1]}


async def test_keep_latest_prunes_history_and_keeps_the_state(saver: BaseCheckpointSaver[Any]) -> None:
    graph = _graph(saver)
    await _runs(graph, "t", 3)
    before = await graph.aget_state({"configurable": {"thread_id": "t"}})
    assert before.values == {"items": [0, 1, 2]} and len(await _history(graph, "t")) == 9
    ttl = CheckpointTTL(default_ttl_minutes=TTL_MINUTES, strategy="keep_latest")
    assert await sweep(saver, ttl, now=time.time() + TTL_MINUTES * 60 + 1) == 1
    history = await _history(graph, "t")
    assert len(history) == 1
    assert history[0].values == before.values
    assert (
        history[0].config["configurable"]["checkpoint_id"] == before.config["configurable"]["checkpoint_id"]
    )
    # The thread goes on from its kept state.
    await _runs(graph, "t", 1)
    assert (await graph.aget_state({"configurable": {"thread_id": "t"}})).values == {"items": [0, 1, 2, 3]}


async def test_a_sweep_takes_at_most_sweep_limit_threads(saver: BaseCheckpointSaver[Any]) -> None:
    graph = _graph(saver)
    for i in range(3):
        await _runs(graph, f"t{i}", 1)
    ttl = CheckpointTTL(default_ttl_minutes=TTL_MINUTES, sweep_limit=2)
    later = time.time() + TTL_MINUTES * 60 + 1
    assert await sweep(saver, ttl, now=later) == 2
    assert await sweep(saver, ttl, now=later) == 1
    assert await sweep(saver, ttl, now=later) == 0


def test_checkpoint_ids_order_by_time_as_langgraph_writes_them() -> None:
    before = checkpoint_id_at(time.time() - 1)
    written = str(uuid6(clock_seq=-1))
    after = checkpoint_id_at(time.time() + 1)
    assert before < written < after


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"default_ttl": 5, "strategy": "archive"}, "must be 'delete' or 'keep_latest'"),
        ({"default_ttl": -1}, "must be positive"),
        ({"default_ttl": "soon"}, "checkpointer.ttl"),
    ],
)
def test_invalid_ttl_sections_are_refused(section: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_ttl(section)
    assert parse_ttl(None) is None
    assert parse_ttl({"strategy": "delete"}) is None  # no default_ttl: nothing expires
