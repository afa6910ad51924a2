"""What the core reports about itself: readiness (`core.health`), store timings and run labels
(`core.observe`)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runplane.core.errors import NotFound, StoreUnavailable
from runplane.core.health import SupportsPing, check_dependencies
from runplane.core.manager import RunManager
from runplane.core.models import NewThread, Run, Thread
from runplane.core.observe import (
    CURRENT_RUN,
    NullObserver,
    ObservedStore,
    Observer,
    RunContext,
    StoreOutcome,
    bind_run,
    graph_of,
    observed,
    seconds_between,
)
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock, memory_manager


class PingableBus(InMemoryBus):
    """The in-memory bus with a server to ping, answering as told."""

    def __init__(self, answer: BaseException | None = None, hang: bool = False) -> None:
        super().__init__()
        self.answer = answer
        self.hang = hang

    async def ping(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if self.answer is not None:
            raise self.answer


class DownStore(InMemoryStore):
    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        raise StoreUnavailable("database unavailable")


class Recorder(NullObserver):
    def __init__(self) -> None:
        self.operations: list[tuple[str, StoreOutcome]] = []

    def store_operation(self, operation: str, seconds: float, outcome: StoreOutcome) -> None:
        assert seconds >= 0
        self.operations.append((operation, outcome))


# -- readiness -------------------------------------------------------------------------------------


async def test_ready_when_the_database_answers() -> None:
    assert await check_dependencies(memory_manager()) == {"database": True}


async def test_a_bus_with_a_server_is_checked_too() -> None:
    bus = PingableBus()
    assert isinstance(bus, SupportsPing) and not isinstance(InMemoryBus(), SupportsPing)
    manager = RunManager(InMemoryStore(), bus)
    assert await check_dependencies(manager) == {"database": True, "redis": True}
    bus.answer = StoreUnavailable("redis unavailable")
    assert await check_dependencies(manager) == {"database": True, "redis": False}
    bus.answer, bus.hang = None, True
    assert await check_dependencies(manager, timeout=0.01) == {"database": True, "redis": False}


async def test_not_ready_when_the_database_fails() -> None:
    manager = RunManager(DownStore(), InMemoryBus())
    assert await check_dependencies(manager) == {"database": False}


# -- observed store --------------------------------------------------------------------------------


async def test_every_store_call_is_timed_with_its_outcome() -> None:
    recorder = Recorder()
    inner = InMemoryStore()
    store = observed(inner, recorder)
    assert repr(store) == f"<ObservedStore {inner!r}>"
    manager = RunManager(store, InMemoryBus())
    thread = await manager.create_thread()
    with pytest.raises(NotFound):
        await manager.get_thread("missing")
    assert ("create_thread", "ok") in recorder.operations
    assert ("get_thread", "error") in recorder.operations
    assert (await manager.get_thread(thread.thread_id)).thread_id == thread.thread_id
    # Plain attributes and the lifecycle methods are passed through untimed.
    assert isinstance(store, ObservedStore)
    assert store.open == inner.open and store.close == inner.close
    assert not any(name in ("open", "close") for name, _ in recorder.operations)


async def test_a_method_replaced_on_the_inner_store_is_the_one_called_and_timed() -> None:
    recorder = Recorder()
    inner = InMemoryStore()
    store = observed(inner, recorder)
    await store.create_thread(NewThread())
    assert store.create_thread is store.create_thread  # one wrapper per method, not one per call
    calls: list[str] = []
    original = inner.create_thread

    async def failing(*args: object, **kwargs: object) -> object:
        calls.append("failing")
        raise NotFound("injected")

    inner.create_thread = failing  # type: ignore[method-assign,assignment]  # as a fault-injecting test does
    with pytest.raises(NotFound, match="injected"):
        await store.create_thread(NewThread())
    inner.create_thread = original  # type: ignore[method-assign]
    await store.create_thread(NewThread())
    assert calls == ["failing"]
    assert [o for o in recorder.operations if o[0] == "create_thread"] == [
        ("create_thread", "ok"),
        ("create_thread", "error"),
        ("create_thread", "ok"),
    ]


async def test_the_null_observer_implements_every_report() -> None:
    """The default observer keeps up with the protocol: every report, same signature, no effect."""
    run = await _run()
    samples: dict[str, object] = {
        "run": run,
        "action": "interrupt",
        "event": "values",
        "operation": "get_run",
        "seconds": 0.1,
        "outcome": "ok",
        "ok": True,
    }
    reports = [name for name in vars(Observer) if not name.startswith("_")]
    assert len(reports) >= 10
    for name in reports:
        expected = inspect.signature(getattr(Observer, name))
        method = getattr(NullObserver, name)
        assert inspect.signature(method) == expected, name
        arguments = [samples[p] for p in list(expected.parameters)[1:]]
        method(NullObserver(), *arguments)


# -- labels ----------------------------------------------------------------------------------------


async def _run(**changes: object) -> Run:
    run = await memory_manager(clock=FakeClock()).create_run("t1", "assistant-1", if_not_exists="create")
    return replace(run, **changes)  # type: ignore[arg-type]


async def test_a_run_is_labelled_by_its_graph_or_else_its_assistant() -> None:
    assert graph_of(await _run(kwargs={"graph_id": "agent"})) == "agent"
    assert graph_of(await _run(kwargs={"graph_id": ""})) == "assistant-1"
    assert graph_of(await _run(kwargs={})) == "assistant-1"


def test_durations_need_both_ends_and_never_go_negative() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert seconds_between(start, start + timedelta(seconds=1.5)) == 1.5
    assert seconds_between(start + timedelta(seconds=1), start) == 0.0
    assert seconds_between(None, start) is None
    assert seconds_between(start, None) is None


async def test_bind_run_marks_the_task_and_the_tasks_it_starts() -> None:
    run = await _run()

    async def executing() -> RunContext | None:
        bind_run(run, "w1")

        async def child() -> RunContext | None:
            return CURRENT_RUN.get()

        return await asyncio.create_task(child())

    assert await asyncio.create_task(executing()) == RunContext(run.run_id, run.thread_id, run.attempt, "w1")
    assert CURRENT_RUN.get() is None  # the caller's context is untouched
