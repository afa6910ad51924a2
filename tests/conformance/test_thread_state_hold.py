"""A state update holds its thread in the store: no run is admitted meanwhile, on any store, from any
process (`Store.reserve_thread` / `release_thread`, `lifecycle.reserve_plan` / `check_not_reserved`),
and the manager's update use-case is atomic against run admission (issue 16)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from runplane.core.errors import LeaseLost, NotFound, ThreadBusy, ThreadReserved
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import MULTITASK_STRATEGIES, Json, MultitaskStrategy, RunFilter, ThreadStateWrite
from runplane.core.store import Store
from runplane.events.memory import InMemoryBus
from runplane.testing import FakeClock
from tests.conformance._support import (
    OTHER,
    OWNER,
    OpenAnother,
    add_run,
    claim,
    make_thread,
    new_run,
    outcome,
)

WRITE = ThreadStateWrite({"n": 1}, {"task": [{"value": "ask"}]}, "interrupted")


# -- the store's rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", MULTITASK_STRATEGIES)
async def test_no_run_is_admitted_while_an_update_holds_the_thread(
    store: Store, open_another: OpenAnother, strategy: MultitaskStrategy
) -> None:
    other = await open_another()
    await make_thread(store, "t1")
    held = await store.reserve_thread("t1", OWNER, "hold-1", 30)
    assert held.thread_id == "t1"
    for instance in (store, other):  # the hold is in the database: every process sees it
        with pytest.raises(ThreadReserved):
            await instance.create_run(new_run("r1", "t1", strategy=strategy))
    assert await store.list_runs("t1", OWNER, RunFilter()) == []
    await other.release_thread("t1", "hold-1")
    assert (await store.create_run(new_run("r1", "t1", strategy=strategy))).run.status == "pending"


async def test_a_thread_with_an_active_run_cannot_be_held(store: Store) -> None:
    await make_thread(store, "t1")
    await add_run(store, "r1", "t1")
    with pytest.raises(ThreadBusy):
        await store.reserve_thread("t1", OWNER, "hold-1", 30)
    await claim(store)
    with pytest.raises(ThreadBusy):  # running, too
        await store.reserve_thread("t1", OWNER, "hold-1", 30)
    await store.finish_run("r1", 1, outcome())
    await store.reserve_thread("t1", OWNER, "hold-1", 30)  # and free again once it ended


async def test_one_update_holds_a_thread_at_a_time_and_an_expired_hold_is_taken_over(
    store: Store, clock: FakeClock
) -> None:
    await make_thread(store, "t1")
    await store.reserve_thread("t1", OWNER, "first", 30)
    with pytest.raises(ThreadBusy) as refused:
        await store.reserve_thread("t1", OWNER, "second", 30)
    assert not isinstance(refused.value, ThreadReserved)  # a 409 for the caller, never waited on
    clock.advance(31)  # the first holder died: its hold lapses
    await store.reserve_thread("t1", OWNER, "second", 30)
    with pytest.raises(LeaseLost):  # the first holder must not write over the second's update
        await store.release_thread("t1", "first", WRITE)
    assert (await store.get_thread("t1", OWNER)).values is None
    assert (await store.release_thread("t1", "first")) is not None  # letting go of nothing: a no-op
    with pytest.raises(ThreadReserved):  # the second still holds it
        await store.create_run(new_run("r1", "t1"))
    await store.release_thread("t1", "second", WRITE)
    await add_run(store, "r1", "t1")


async def test_an_expired_hold_does_not_block_admission(store: Store, clock: FakeClock) -> None:
    await make_thread(store, "t1")
    await store.reserve_thread("t1", OWNER, "hold-1", 30)
    clock.advance(30.5)
    assert (await add_run(store, "r1", "t1")).status == "pending"
    # The late holder still records its state, but never marks a thread with a run idle.
    thread = await store.release_thread("t1", "hold-1", ThreadStateWrite({"n": 2}, {}, "idle"))
    assert thread is not None and thread.status == "busy" and thread.values == {"n": 2}


async def test_release_records_the_state_and_frees_the_thread(store: Store) -> None:
    await make_thread(store, "t1")
    await store.reserve_thread("t1", OWNER, "hold-1", 30)
    released = await store.release_thread("t1", "hold-1", WRITE)
    assert released is not None
    assert (released.values, released.interrupts, released.status) == (
        WRITE.values,
        WRITE.interrupts,
        WRITE.status,
    )
    assert await store.get_thread("t1", OWNER) == released
    await store.reserve_thread("t1", OWNER, "hold-2", 30)  # free again


async def test_holds_are_owner_scoped_and_end_with_the_thread(store: Store) -> None:
    await make_thread(store, "t1")
    with pytest.raises(NotFound):
        await store.reserve_thread("t1", OTHER, "hold-1", 30)
    with pytest.raises(NotFound):
        await store.reserve_thread("missing", OWNER, "hold-1", 30)
    await store.reserve_thread("t1", OWNER, "hold-1", 30)
    await store.delete_thread("t1", OWNER)
    await make_thread(store, "t1")  # the same id again: a new thread, which nothing holds
    await add_run(store, "r1", "t1")
    await store.delete_thread("t1", OWNER)
    assert await store.release_thread("t1", "hold-1", WRITE) is None


# -- the manager's use-case ---------------------------------------------------------------------------


class _AdmissionSpy:
    """The store, telling the test when an admission was turned away by a hold."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.turned_away = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create_run(self, new: Any) -> Any:
        try:
            return await self.inner.create_run(new)
        except ThreadReserved:
            self.turned_away.set()
            raise


class _BlockingRuntime:
    """A `GraphRuntime` whose checkpoint write waits for the test (LangGraph's side, faked: the
    store is what is under test). It records whether a run existed on the thread while it wrote."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writing = asyncio.Event()
        self.may_finish = asyncio.Event()
        self.values: Json = {}
        self.runs_while_writing: list[str] = []

    async def update_state(self, graph_id: str, thread_id: str, values: Any, **options: Any) -> Json:
        self.writing.set()
        await self.may_finish.wait()
        runs = await self.store.list_runs(thread_id, OWNER, RunFilter())
        self.runs_while_writing = [run.run_id for run in runs]
        self.values = dict(values)
        return {"checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": "c1"}}

    async def get_state(self, graph_id: str, thread_id: str, **options: Any) -> Json:
        return {"values": self.values, "next": [], "tasks": []}


def _manager(store: Store, clock: FakeClock, bus: InMemoryBus | None = None) -> RunManager:
    # A long fallback: a waiting admission must be woken by the release hint, not by polling.
    settings = ManagerSettings(wait_fallback_seconds=60)
    return RunManager(store, bus or InMemoryBus(), clock=clock, settings=settings)


@pytest.mark.parametrize("strategy", ["enqueue", "reject", "interrupt"])
async def test_a_run_created_during_a_state_update_is_admitted_after_it(
    store: Store, open_another: OpenAnother, clock: FakeClock, strategy: MultitaskStrategy
) -> None:
    """The race of issue 16: the update checked "not busy", then a run was admitted and started
    while the checkpoint was being written, and the update marked the busy thread idle."""
    spy = _AdmissionSpy(await open_another())  # the run comes from another process
    bus = InMemoryBus()
    updater, creator = _manager(store, clock, bus), _manager(spy, clock, bus)
    await make_thread(store, "t1")
    runtime = _BlockingRuntime(store)
    update = asyncio.create_task(
        updater.update_thread_state(runtime, "g", "t1", OWNER, {"n": 1})  # type: ignore[arg-type]
    )
    await runtime.writing.wait()
    create = asyncio.create_task(creator.create_run("t1", "agent", OWNER, multitask_strategy=strategy))
    await spy.turned_away.wait()
    assert not create.done()
    runtime.may_finish.set()
    await update
    run = await create
    assert runtime.runs_while_writing == []  # no run existed while the checkpoint was written
    thread = await store.get_thread("t1", OWNER)
    assert thread.values == {"n": 1} and thread.status == "busy"  # the update never hid the run
    assert [r.run_id for r in await store.list_runs("t1", OWNER, RunFilter())] == [run.run_id]


async def test_a_state_update_on_a_busy_thread_is_refused_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    manager = _manager(store, clock)
    await make_thread(store, "t1")
    await add_run(store, "r1", "t1")
    runtime = _BlockingRuntime(store)
    with pytest.raises(ThreadBusy):
        await manager.update_thread_state(runtime, "g", "t1", OWNER, {"n": 1})  # type: ignore[arg-type]
    assert not runtime.writing.is_set()
    assert (await store.get_thread("t1", OWNER)).status == "busy"


async def test_concurrent_updates_and_admissions_never_overlap(
    store: Store, open_another: OpenAnother, clock: FakeClock
) -> None:
    """Many updates and `reject` admissions at once on one thread, from two processes: each update
    either ran with no run on the thread or was refused; a run admitted is never seen by an update."""
    other = await open_another()
    bus = InMemoryBus()
    managers = [_manager(store, clock, bus), _manager(other, clock, bus)]
    await make_thread(store, "t1")
    runtimes = [_BlockingRuntime(store) for _ in range(6)]
    for runtime in runtimes:
        runtime.may_finish.set()

    async def update(i: int) -> str:
        try:
            await managers[i % 2].update_thread_state(runtimes[i], "g", "t1", OWNER, {"n": i})  # type: ignore[arg-type]
        except ThreadBusy:
            return "refused"
        return "updated"

    async def admit(i: int) -> str:
        try:
            await managers[i % 2].create_run("t1", "agent", OWNER, multitask_strategy="reject")
        except ThreadBusy:
            return "busy"
        return "admitted"

    results = await asyncio.gather(*(update(i) for i in range(6)), *(admit(i) for i in range(6)))
    kinds = Counter(results)
    assert kinds["admitted"] == 1, kinds  # reject: one run, whatever the updates did
    assert kinds["updated"] + kinds["refused"] == 6, kinds
    assert all(runtime.runs_while_writing == [] for runtime in runtimes if runtime.writing.is_set())
    assert (await store.get_thread("t1", OWNER)).status == "busy"
