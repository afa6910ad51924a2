"""Regression tests for the defects of runplane's predecessor, each written to catch one of them.

The predecessor kept cancel requests, admission locks and in-flight bookkeeping in process memory,
so a restart or a second process lost them, and it kept every finished run's records forever.
"Restart" here is a new store and manager on the same SQLite file, with a fresh in-memory bus.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import runplane.events.memory as memory_bus
from runplane.core.errors import CancelRequested, ThreadBusy
from runplane.core.events import StreamEvent
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome, Run, RunFilter, TokenUsage
from runplane.events.memory import InMemoryBus
from runplane.stores import open_store
from runplane.testing import FakeClock, memory_manager

SQLITE_MODULE = "runplane.stores.sqlite.store"
LEASE = 30.0

OpenManager = Callable[..., Awaitable[RunManager]]


def _sqlite_missing() -> bool:
    try:
        return importlib.util.find_spec(SQLITE_MODULE) is None
    except ModuleNotFoundError:
        return True


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def open_manager(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpenManager]:
    """Open a manager on one SQLite file; each call is a new process (or a restart)."""
    if _sqlite_missing():
        pytest.skip(f"{SQLITE_MODULE} does not exist yet")
    url = f"sqlite:///{tmp_path / 'runplane.db'}"
    async with AsyncExitStack() as stack:

        async def open_one(*, wait_fallback_seconds: float = 5.0) -> RunManager:
            store = open_store(url, clock=clock)
            await store.open()
            stack.push_async_callback(store.close)
            settings = ManagerSettings(lease_seconds=LEASE, wait_fallback_seconds=wait_fallback_seconds)
            return RunManager(store, InMemoryBus(), clock=clock, settings=settings)

        yield open_one


async def _running(manager: RunManager, thread_id: str = "t1") -> Run:
    created = await manager.create_run(thread_id, "agent", if_not_exists="create")
    run = await manager.claim("w1")
    assert run is not None and run.run_id == created.run_id
    return run


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    async with asyncio.timeout(5):
        return [event async for event in events]


async def test_cancel_is_durable_across_a_restart(open_manager: OpenManager) -> None:
    before = await open_manager()
    run = await _running(before)
    answered = await before.cancel_run(run.run_id)
    assert answered is not None
    assert (answered.status, answered.cancel_action) == ("running", "interrupt")
    await before.store.close()  # the process dies; its bus and memory go with it

    after = await open_manager()
    stored = await after.get_run(run.run_id)
    assert (stored.status, stored.cancel_action) == ("running", "interrupt")
    # The worker's next heartbeat hears it, whoever it talks to.
    assert await after.renew(run, "w1") == "interrupt"
    with pytest.raises(CancelRequested):
        await after.finish(run, Outcome("success", "idle"))
    assert (await after.finish(run, Outcome("interrupted", "idle"))).status == "interrupted"


async def test_admission_is_atomic_across_processes(open_manager: OpenManager) -> None:
    first, second = await open_manager(), await open_manager()
    await first.create_thread(thread_id="t1")

    async def create(n: int) -> str:
        manager = first if n % 2 else second
        try:
            await manager.create_run("t1", "agent", multitask_strategy="reject", run_id=f"r{n}")
        except ThreadBusy:
            return "busy"
        return "admitted"

    results = Counter(await asyncio.gather(*(create(n) for n in range(50))))
    assert results == {"admitted": 1, "busy": 49}
    assert len(await second.list_runs("t1")) == 1


async def test_a_running_run_survives_a_restart_and_is_resumed(
    open_manager: OpenManager, clock: FakeClock
) -> None:
    before = await open_manager()
    run = await _running(before)
    await before.store.close()  # killed mid-run: nobody finished or released it

    after = await open_manager()
    stored = await after.get_run(run.run_id)
    assert stored.status == "running"
    assert [r.status for r in await after.list_runs("t1")] == ["running"]
    assert (await after.get_thread("t1")).status == "busy"
    assert await after.recover_expired() == []  # the lease is still valid: not stolen early

    clock.advance(LEASE + 1)
    [recovered] = await after.recover_expired()
    assert (recovered.run_id, recovered.status) == (run.run_id, "pending")
    resumed = await after.claim("w2")
    assert resumed is not None
    assert (resumed.run_id, resumed.attempt) == (run.run_id, run.attempt + 1)
    assert (await after.finish(resumed, Outcome("success", "idle"))).status == "success"


def _container_sizes(obj: object) -> dict[str, int]:
    return {name: len(value) for name, value in vars(obj).items() if hasattr(value, "__len__")}


async def test_nothing_is_kept_per_run_once_it_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monotonic = _FakeMonotonic()
    monkeypatch.setattr(memory_bus, "time", monotonic)
    clock = FakeClock()
    manager = memory_manager(clock=clock, settings=ManagerSettings(wait_fallback_seconds=3600))
    bus = manager.bus
    assert isinstance(bus, InMemoryBus)
    manager.bus = bus = InMemoryBus(retention_seconds=60)
    manager_sizes = _container_sizes(manager)

    for n in range(1000):
        created = await manager.create_run(f"t{n}", "agent", if_not_exists="create")
        joiner = asyncio.create_task(manager.wait_for_run(created.run_id)) if n % 10 == 0 else None
        run = await manager.claim("w1")
        assert run is not None
        await manager.publish(run, "values", b'{"n": %d}' % n)
        if n % 3 == 0:
            await manager.record_progress(run, model_name="m")
        if n % 7 == 0:
            await manager.cancel_run(run.run_id)
            await manager.finish(run, Outcome("interrupted", "idle"))
        else:
            await manager.finish(run, Outcome("success", "idle"))
        if joiner is not None:
            async with asyncio.timeout(1):
                assert (await joiner) is not None
        if n % 50 == 0:
            assert len(await _collect(await manager.stream_run(run.run_id))) == 1

    assert _container_sizes(manager) == manager_sizes
    assert len(bus._listeners) == 0  # no joiner, stream or cancel listener left behind
    monotonic.now += 61  # retention passed
    await bus.end_stream("probe")  # any use of the bus drops expired streams
    assert repr(bus) == "<InMemoryBus streams=1 channels=0>"
    assert len(bus._ended) == 1


async def test_cancel_join_and_stream_a_run_only_the_store_knows(open_manager: OpenManager) -> None:
    worker_process = await open_manager()
    run = await _running(worker_process)
    await worker_process.publish(run, "values", b'{"before": "restart"}')

    # A freshly started API process: its bus never heard of the run.
    api = await open_manager(wait_fallback_seconds=0.05)
    cancelled = await api.cancel_run(run.run_id)
    assert cancelled is not None and cancelled.cancel_action == "interrupt"
    joiner = asyncio.create_task(api.wait_for_run(run.run_id))
    await asyncio.sleep(0.01)
    assert not joiner.done()
    assert await worker_process.renew(run, "w1") == "interrupt"
    await worker_process.finish(run, Outcome("interrupted", "idle"))
    async with asyncio.timeout(5):  # no hint crosses the two buses: the fallback re-read finds it
        joined = await joiner
    assert joined is not None and joined.status == "interrupted"
    # The stream of a run that ended elsewhere ends at once instead of waiting forever.
    assert await _collect(await api.stream_run(run.run_id)) == []


async def test_stream_a_run_resumed_after_a_restart(open_manager: OpenManager, clock: FakeClock) -> None:
    before = await open_manager()
    run = await _running(before)
    await before.store.close()

    after = await open_manager()
    events = await after.stream_run(run.run_id)  # subscribed before the new attempt runs
    clock.advance(LEASE + 1)
    await after.recover_expired()
    resumed = await after.claim("w2")
    assert resumed is not None
    reader = asyncio.create_task(_collect(events))
    await after.publish(resumed, "values", b'{"resumed": true}')
    await after.finish(resumed, Outcome("success", "idle"))
    assert [event.data for event in await reader] == [b'{"resumed": true}']


async def test_a_second_cancel_answers_the_run(open_manager: OpenManager) -> None:
    manager = await open_manager()
    run = await _running(manager)
    first = await manager.cancel_run(run.run_id)
    second = await manager.cancel_run(run.run_id)
    assert first is not None and second is not None
    assert (second.run_id, second.status, second.cancel_action) == (run.run_id, "running", "interrupt")
    finished = await manager.finish(run, Outcome("interrupted", "idle"))
    assert await manager.cancel_run(run.run_id) == finished
    assert await manager.cancel_run(run.run_id, action="rollback", wait=True) == finished

    pending = await manager.create_run("t1", "agent")
    settled = await manager.cancel_run(pending.run_id)
    assert settled is not None and settled.status == "interrupted"
    assert await manager.cancel_run(pending.run_id) == settled


async def test_a_model_name_from_progress_is_kept_at_finish(open_manager: OpenManager) -> None:
    manager = await open_manager()
    run = await _running(manager)
    await manager.record_progress(run, model_name="gpt-4o-mini", usage=TokenUsage(10, 5, 15))
    finished = await manager.finish(run, Outcome("success", "idle", model_name=None, usage=None))
    assert (finished.model_name, finished.usage) == ("gpt-4o-mini", TokenUsage(10, 5, 15))
    await manager.store.close()

    after = await open_manager()
    stored = await after.get_run(run.run_id)
    assert (stored.model_name, stored.usage) == ("gpt-4o-mini", TokenUsage(10, 5, 15))
    assert await after.thread_usage("t1") == TokenUsage(10, 5, 15)
    assert [r.model_name for r in await after.list_runs("t1", filter=RunFilter(status="success"))] == [
        "gpt-4o-mini"
    ]


class _FakeMonotonic:
    """Stands in for `runplane.events.memory.time` (retention without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now
