"""`RunManager`'s thread-state use-cases (`core.state_updates`) over the memory store and a real
LangGraph graph: an update writes a checkpoint and records the new state on the thread, holding the
thread meanwhile, and a run created during the hold is admitted after it."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from runplane.core.errors import ThreadBusy, ThreadReserved
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Admission, NewRun, RunFilter
from runplane.core.state_updates import interrupts_of, state_write
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock, memory_manager

#: Long enough that a test passing within a second cannot have relied on the polling fallback.
NO_POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)


class Counter(TypedDict):
    n: int


def _two_steps() -> Any:
    """`first` then `second`: an update as `first` leaves `second` to run next."""
    graph = StateGraph(Counter)
    graph.add_node("first", lambda state: {"n": state["n"] + 1})
    graph.add_node("second", lambda state: {"n": state["n"] * 10})
    graph.add_edge(START, "first")
    graph.add_edge("first", "second")
    graph.add_edge("second", END)
    return graph.compile()


def _runtime() -> LangGraphRuntime:
    return LangGraphRuntime({"g": _two_steps()}, InMemorySaver())


class _GatedRuntime(LangGraphRuntime):
    """Holds every `update_state` until `may_finish` is set, so a test can act mid-update."""

    def __init__(self) -> None:
        super().__init__({"g": _two_steps()}, InMemorySaver())
        self.writing = asyncio.Event()
        self.may_finish = asyncio.Event()

    async def update_state(self, graph_id: str, thread_id: str, values: Any, **options: Any) -> Any:
        self.writing.set()
        await self.may_finish.wait()
        return await super().update_state(graph_id, thread_id, values, **options)


class _TurnAwayStore(InMemoryStore):
    """Tells the test when an admission was turned away by a state update's hold."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__(clock=clock)
        self.turned_away = asyncio.Event()

    async def create_run(self, new: NewRun) -> Admission:
        try:
            return await super().create_run(new)
        except ThreadReserved:
            self.turned_away.set()
            raise


@pytest.fixture
def manager() -> RunManager:
    return memory_manager(clock=FakeClock(), settings=NO_POLLING)


async def test_an_update_writes_a_checkpoint_and_records_the_state_on_the_thread(manager: RunManager) -> None:
    runtime = _runtime()
    thread = await manager.create_thread()
    result = await manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 4}, as_node="second")
    assert result["checkpoint"]["thread_id"] == thread.thread_id
    assert result["checkpoint"]["checkpoint_id"]
    recorded = await manager.get_thread(thread.thread_id)
    assert recorded.values == {"n": 4}
    assert recorded.status == "idle"  # as the last node: none is left to run
    state = await runtime.get_state("g", thread.thread_id)
    assert state["values"] == {"n": 4}
    assert state["checkpoint"]["checkpoint_id"] == result["checkpoint"]["checkpoint_id"]
    # The hold ended: a run is admitted at once, even one that refuses to wait.
    run = await manager.create_run(thread.thread_id, "g", multitask_strategy="reject")
    assert run.status == "pending"


async def test_an_update_as_a_node_leaves_the_next_one_pending(manager: RunManager) -> None:
    runtime = _runtime()
    thread = await manager.create_thread()
    await manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 1}, as_node="first")
    assert (await runtime.get_state("g", thread.thread_id))["next"] == ["second"]
    recorded = await manager.get_thread(thread.thread_id)
    assert (recorded.values, recorded.status) == ({"n": 1}, "interrupted")


async def test_a_refused_update_records_nothing_and_releases_the_thread(manager: RunManager) -> None:
    runtime = _runtime()
    thread = await manager.create_thread()
    with pytest.raises(Exception, match="no_such_node"):
        await manager.update_thread_state(
            runtime, "g", thread.thread_id, "", {"n": 1}, as_node="no_such_node"
        )
    recorded = await manager.get_thread(thread.thread_id)
    assert (recorded.values, recorded.status) == (None, "idle")
    run = await manager.create_run(thread.thread_id, "g", multitask_strategy="reject")
    assert run.status == "pending"


async def test_an_update_on_a_busy_thread_is_refused_before_the_checkpoint(manager: RunManager) -> None:
    runtime = _GatedRuntime()
    thread = await manager.create_thread()
    await manager.create_run(thread.thread_id, "g")
    with pytest.raises(ThreadBusy):
        await manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 1})
    assert not runtime.writing.is_set()
    assert (await runtime.get_state("g", thread.thread_id))["values"] == {}


async def test_supersteps_are_applied_in_order_and_recorded(manager: RunManager) -> None:
    runtime = _runtime()
    thread = await manager.create_thread()
    supersteps = [
        {"updates": [{"values": {"n": 2}, "as_node": "__input__"}]},
        {"updates": [{"values": {"n": 3}, "as_node": "first"}]},
    ]
    written = await manager.write_supersteps(runtime, "g", thread.thread_id, "", supersteps)
    assert written is not None
    assert (written.values, written.status) == ({"n": 3}, "interrupted")  # `second` is next
    history = await runtime.get_history("g", thread.thread_id, limit=10)
    # One checkpoint per superstep, newest first: the input, then the update as `first`.
    assert [(state["metadata"]["source"], state["values"]) for state in history] == [
        ("update", {"n": 3}),
        ("input", {}),
    ]


async def test_a_run_created_during_an_update_is_admitted_after_it() -> None:
    clock = FakeClock()
    store = _TurnAwayStore(clock)
    manager = RunManager(store, InMemoryBus(), clock=clock, settings=NO_POLLING)
    runtime = _GatedRuntime()
    thread = await manager.create_thread()
    update = asyncio.create_task(manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 7}))
    await runtime.writing.wait()
    create = asyncio.create_task(manager.create_run(thread.thread_id, "g", multitask_strategy="reject"))
    await store.turned_away.wait()
    assert not create.done()
    assert await manager.list_runs(thread.thread_id, "", RunFilter()) == []  # none while writing
    runtime.may_finish.set()
    await update
    async with asyncio.timeout(5):  # the release hint wakes it; the fallback is an hour away
        run = await create
    assert run.status == "pending"
    recorded = await manager.get_thread(thread.thread_id)
    assert recorded.values == {"n": 7} and recorded.status == "busy"  # the update never hid the run


async def test_an_admission_gives_up_when_the_thread_stays_held() -> None:
    """A hold that is never released (its holder hung, and the store's clock stands still so the
    hold does not lapse): the admission waits twice the hold's lifetime, then says the thread is
    busy, and no run is created."""
    clock = FakeClock()
    store = _TurnAwayStore(clock)
    settings = ManagerSettings(lease_seconds=0.05, max_attempts=2, wait_fallback_seconds=0.02)
    manager = RunManager(store, InMemoryBus(), clock=clock, settings=settings)
    runtime = _GatedRuntime()
    thread = await manager.create_thread()
    update = asyncio.create_task(manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 1}))
    await runtime.writing.wait()
    with pytest.raises(ThreadBusy, match="state update holds it"):
        await manager.create_run(thread.thread_id, "g")
    assert store.turned_away.is_set()
    assert await manager.list_runs(thread.thread_id, "", RunFilter()) == []
    runtime.may_finish.set()
    await update
    assert (await manager.get_thread(thread.thread_id)).values == {"n": 1}


def test_a_state_with_pending_interrupts_reads_as_interrupted() -> None:
    state = {
        "values": {"n": 1},
        "next": [],
        "tasks": [
            {"id": "t1", "name": "ask", "interrupts": [{"value": "sure?", "id": "i1"}]},
            {"id": "t2", "name": "other", "interrupts": []},
            "not a task",
        ],
    }
    assert interrupts_of(state) == {"t1": [{"value": "sure?", "id": "i1"}]}
    write = state_write(state)
    assert (write.values, write.interrupts, write.status) == (
        {"n": 1},
        {"t1": [{"value": "sure?", "id": "i1"}]},
        "interrupted",
    )
    assert state_write({"values": [1, 2], "next": [], "tasks": []}).values is None  # not a dict state
    assert state_write({"values": {"n": 2}}).status == "idle"
