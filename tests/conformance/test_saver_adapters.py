"""The contract of runplane's adapter of each LangGraph saver (memory, SQLite, PostgreSQL).

Real LangGraph graphs (with a subgraph and an interrupt) checkpoint through the adapter that
`open_checkpointer` opens; the tests then savepoint, roll back, copy, delete and fence, and read the
result back through LangGraph's public API only (`aget_state`, `alist`). These are the tests that
`scripts/test_bounds.sh` also runs at the lowest LangGraph versions `pyproject.toml` allows: they
pin what the adapters assume of LangGraph's private tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from runplane.core.errors import LeaseLost
from runplane.runtime import checkpointer as checkpoints
from runplane.runtime import thread_maintenance
from runplane.runtime.checkpointer import (
    PublicSaverAdapter,
    Savepoint,
    adapter_for,
    fence_writes,
    open_checkpointer,
)
from runplane.runtime.checkpointer.memory import MemoryAdapter
from runplane.stores.sqlite import SqliteStore
from tests._services import drop_postgres_database, fresh_postgres_database, postgres_url

#: kind -> (the saver `open_checkpointer` opens, its adapter)
OPENED = {
    "memory": ("FencedMemorySaver", "MemoryAdapter"),
    "sqlite": ("FencedSqliteSaver", "SqliteAdapter"),
    # On the file of a store open in this loop: its writes go through the store's group commit.
    "sqlite-with-store": ("FencedSqliteSaver", "SqliteAdapter"),
    "postgres": ("FencedPostgresSaver", "PostgresAdapter"),
}


class Log(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _step(state: Log) -> Log:
    return {"log": ["step"]}


def _inner(state: Log) -> Log:
    return {"log": ["inner"]}


def _ask(state: Log) -> Log:
    return {"log": [f"answer:{interrupt('question')}"]}


def _chain(*nodes: tuple[str, Any]) -> StateGraph[Log]:
    builder = StateGraph(Log)
    previous = START
    for name, node in nodes:
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


#: step -> a subgraph (its own checkpoint namespace) -> an interrupt at the root.
ASKING = _chain(("step", _step), ("sub", _chain(("inner", _inner)).compile()), ("ask", _ask))
#: step -> a subgraph that interrupts inside (the interrupt's namespace is the subgraph's).
ASKING_INSIDE = _chain(("step", _step), ("sub", _chain(("inner", _inner), ("ask", _ask)).compile()))


def config(thread_id: str, run_id: str) -> RunnableConfig:
    """A run's config as the executor builds it: LangGraph copies `metadata` into its checkpoints."""
    return {"configurable": {"thread_id": thread_id}, "metadata": {"run_id": run_id}}


def new_thread() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str | None]:
    """One database for the module's PostgreSQL tests (every test uses its own thread ids)."""
    base = postgres_url()
    if base is None:
        yield None
        return
    url = fresh_postgres_database(base, prefix="runplane_savers")
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(
    params=["memory", "sqlite", "sqlite-with-store", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def saver(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: str | None
) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    kind: str = request.param
    sqlite_url = f"sqlite:///{tmp_path / 'runplane.db'}"
    url = {"memory": "memory:", "sqlite": sqlite_url, "sqlite-with-store": sqlite_url}.get(kind)
    if url is None:
        if postgres_database is None:
            pytest.skip("postgres: RUNPLANE_TEST_POSTGRES_URL is not set")
        url = postgres_database
    async with contextlib.AsyncExitStack() as stack:
        if kind == "sqlite-with-store":
            store = await stack.enter_async_context(SqliteStore(str(tmp_path / "runplane.db")))
        opened = await stack.enter_async_context(open_checkpointer(url))
        assert type(opened).__name__ == OPENED[kind][0]
        assert type(adapter_for(opened)).__name__ == OPENED[kind][1]
        if kind == "sqlite-with-store":
            assert cast(Any, opened).writer is store._writer
        yield opened


async def stored(saver: BaseCheckpointSaver[Any], thread_id: str) -> list[tuple[str, str, Any]]:
    """Every checkpoint of the thread, in every namespace: (namespace, id, run id), sorted."""
    listed = saver.alist({"configurable": {"thread_id": thread_id}})
    return sorted(
        [
            (
                c.config["configurable"]["checkpoint_ns"],
                c.config["configurable"]["checkpoint_id"],
                c.metadata.get("run_id"),
            )
            async for c in listed
        ]
    )


async def snapshot(graph: Any, thread_id: str) -> tuple[Any, ...]:
    """What a client reads of the thread: values, next nodes, pending interrupts, head checkpoint."""
    state = await graph.aget_state({"configurable": {"thread_id": thread_id}}, subgraphs=True)
    interrupts = [(i.value, i.id) for i in state.interrupts]
    return state.values, state.next, interrupts, state.config["configurable"].get("checkpoint_id")


async def test_langgraphs_own_saver_class_gets_the_same_adapter() -> None:
    plain = InMemorySaver()  # as an application would compile its graph with
    assert isinstance(adapter_for(plain), MemoryAdapter)
    graph = ASKING.compile(checkpointer=plain)
    thread = new_thread()
    point = await checkpoints.savepoint(plain, thread)
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    await checkpoints.rollback(plain, thread, "run-a", point)
    assert await stored(plain, thread) == []


async def test_a_saver_without_an_adapter_goes_through_langgraphs_public_api_only() -> None:
    plain = InMemorySaver()
    adapter = PublicSaverAdapter(plain)
    graph = ASKING.compile(checkpointer=plain)
    thread = new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    assert await adapter.savepoint(thread) == Savepoint(thread, None)  # nothing to remember
    await adapter.rollback(thread, "run-a", None)  # InMemorySaver deletes no runs: logged, kept
    assert await stored(plain, thread) != []
    with pytest.raises(NotImplementedError):
        await adapter.copy_thread(thread, new_thread())
    await adapter.delete_thread(thread)
    assert await stored(plain, thread) == []


async def test_rollback_of_a_first_run_removes_its_checkpoints_in_every_namespace(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    thread, other = new_thread(), new_thread()
    await graph.ainvoke({"log": []}, config(other, "run-other"))
    kept = await stored(saver, other)

    point = await checkpoints.savepoint(saver, thread)
    assert point.checkpoint_id is None
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    written = await stored(saver, thread)
    assert {ns.split(":")[0] for ns, _, _ in written} == {"", "sub"}  # the subgraph checkpointed too
    assert {run for _, _, run in written} == {"run-a"}

    await checkpoints.rollback(saver, thread, "run-a", point)
    assert await stored(saver, thread) == []
    assert (await graph.aget_state({"configurable": {"thread_id": thread}})).values == {}
    assert await stored(saver, other) == kept  # another thread is untouched


async def test_rollback_of_a_resume_restores_the_pending_writes_it_answered(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    thread = new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    before = await snapshot(graph, thread)
    checkpoints_before = await stored(saver, thread)
    assert before[1] == ("ask",) and [value for value, _ in before[2]] == ["question"]

    point = await checkpoints.savepoint(saver, thread)
    assert point.checkpoint_id == before[3]
    done = await graph.ainvoke(Command(resume="b"), config(thread, "run-b"))
    assert done["log"][-1] == "answer:b"
    await checkpoints.rollback(saver, thread, "run-b", point)

    assert await snapshot(graph, thread) == before
    assert await stored(saver, thread) == checkpoints_before
    # The answer of the rolled-back run is not replayed: the question is asked again.
    again = await graph.ainvoke(Command(resume="c"), config(thread, "run-c"))
    assert again["log"] == [*done["log"][:-1], "answer:c"]


async def test_rollback_of_a_resume_inside_a_subgraph_asks_the_subgraph_again(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING_INSIDE.compile(checkpointer=saver)
    thread = new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    before = await snapshot(graph, thread)
    assert [value for value, _ in before[2]] == ["question"]

    point = await checkpoints.savepoint(saver, thread)
    done = await graph.ainvoke(Command(resume="b"), config(thread, "run-b"))
    assert done["log"][-1] == "answer:b"
    await checkpoints.rollback(saver, thread, "run-b", point)

    assert await snapshot(graph, thread) == before
    again = await graph.ainvoke(Command(resume="c"), config(thread, "run-c"))
    assert again["log"] == [*done["log"][:-1], "answer:c"]


async def test_rollback_without_a_savepoint_deletes_the_runs_checkpoints_only(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    thread = new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    checkpoints_before = await stored(saver, thread)
    await graph.ainvoke(Command(resume="b"), config(thread, "run-b"))
    await checkpoints.rollback(saver, thread, "run-b", None)  # a recovered run: no savepoint
    assert await stored(saver, thread) == checkpoints_before


async def test_copy_thread_copies_checkpoints_writes_and_values_in_every_namespace(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    source, target = new_thread(), new_thread()
    await graph.ainvoke({"log": []}, config(source, "run-a"))
    source_state = await snapshot(graph, source)

    await checkpoints.copy_thread(saver, source, target)
    assert await stored(saver, target) == await stored(saver, source)
    assert await snapshot(graph, target) == source_state  # the interrupt (a pending write) too
    head = await saver.aget_tuple({"configurable": {"thread_id": source}})
    copied = await saver.aget_tuple({"configurable": {"thread_id": target}})
    assert head is not None and copied is not None
    assert copied.pending_writes == head.pending_writes and copied.checkpoint == head.checkpoint

    # The copy lives on its own: answering it leaves the source waiting.
    answered = await graph.ainvoke(Command(resume="copy"), config(target, "run-b"))
    assert answered["log"][-1] == "answer:copy"
    assert await snapshot(graph, source) == source_state


async def test_delete_thread_deletes_every_namespace_of_that_thread_only(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    thread, other = new_thread(), new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    await graph.ainvoke({"log": []}, config(other, "run-b"))
    kept = await stored(saver, other)

    await checkpoints.delete_thread(saver, thread)
    assert await stored(saver, thread) == []
    assert await saver.aget_tuple({"configurable": {"thread_id": thread}}) is None
    assert await stored(saver, other) == kept
    await checkpoints.delete_thread(saver, thread)  # a thread without checkpoints: a no-op


class Lease:
    """A fake lease whose guard counts the writes it let through."""

    def __init__(self) -> None:
        self.held = True
        self.writes = 0

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        if not self.held:
            raise LeaseLost("lease lost")
        self.writes += 1
        yield


async def test_fenced_writes_are_refused_after_the_lease_is_lost(saver: BaseCheckpointSaver[Any]) -> None:
    lease = Lease()

    def losing(state: Log) -> Log:
        lease.held = False  # the lease expires while this step runs
        return {"log": ["late"]}

    graph = _chain(("step", _step), ("losing", losing), ("after", _step)).compile(checkpointer=saver)
    thread = new_thread()

    async def attempt() -> None:
        fence_writes(lease.guard)  # as `Execution.execute` does, in the attempt's own task
        await graph.ainvoke({"log": []}, config(thread, "run-a"), durability="sync")

    with pytest.raises(LeaseLost):
        await asyncio.create_task(attempt())
    assert lease.writes > 0  # the writes before the loss went through the guard
    state = await graph.aget_state({"configurable": {"thread_id": thread}})
    assert state.values == {"log": ["step"]} and state.next == ("losing",)

    # The guard belongs to the attempt's task: another task (an API state update) writes freely.
    await graph.aupdate_state({"configurable": {"thread_id": thread}}, {"log": ["by hand"]})
    assert (await graph.aget_state({"configurable": {"thread_id": thread}})).values == {
        "log": ["step", "by hand"]
    }


async def test_prune_keeps_the_latest_checkpoint_of_each_namespace_and_its_writes(
    saver: BaseCheckpointSaver[Any],
) -> None:
    graph = ASKING.compile(checkpointer=saver)
    thread, other = new_thread(), new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    await graph.ainvoke({"log": []}, config(other, "run-b"))
    before = await snapshot(graph, thread)
    written = await stored(saver, thread)
    kept = await stored(saver, other)
    latest = {ns: max(c for n, c, _ in written if n == ns) for ns, _, _ in written}
    assert len(written) > len(latest)

    await thread_maintenance.prune_keep_latest(saver, thread)
    pruned = await stored(saver, thread)
    # The root keeps its latest checkpoint; a subgraph call's namespace keeps its latest or goes
    # with the root checkpoint the call started from (LangGraph's own `aprune` on PostgreSQL).
    assert [c for ns, c, _ in pruned if ns == ""] == [latest[""]]
    assert all(c == latest[ns] for ns, c, _ in pruned)
    assert await snapshot(graph, thread) == before  # values and the pending interrupt stay
    assert await stored(saver, other) == kept
    answered = await graph.ainvoke(Command(resume="after prune"), config(thread, "run-c"))
    assert answered["log"][-1] == "answer:after prune"


async def test_a_rollback_that_fails_half_way_changes_nothing(saver: BaseCheckpointSaver[Any]) -> None:
    if isinstance(saver, InMemorySaver):
        pytest.skip("memory: a rollback has no await, nothing runs in between")
    graph = ASKING.compile(checkpointer=saver)
    thread, other = new_thread(), new_thread()
    await graph.ainvoke({"log": []}, config(thread, "run-a"))
    point = await checkpoints.savepoint(saver, thread)
    await graph.ainvoke(Command(resume="b"), config(thread, "run-b"))
    written = await stored(saver, thread)
    # The same pending write twice: its insert fails on the primary key, after the deletes ran.
    twice = Savepoint(
        thread, point.checkpoint_id, {key: [*rows, *rows] for key, rows in point.writes.items()}
    )

    with pytest.raises(Exception, match=r"(?i)unique"):
        await checkpoints.rollback(saver, thread, "run-b", twice)
    await graph.ainvoke({"log": []}, config(other, "run-c"))  # LangGraph's next write commits
    assert await stored(saver, thread) == written
