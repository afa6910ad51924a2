"""Prometheus metrics after real runs: a real worker executes LangGraph graphs over a SQLite file,
and every `runplane_*` family moves by exactly what happened."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from runplane.api.metrics import PrometheusMetrics
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Run
from runplane.core.observe import observed
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.sqlite import SqliteStore
from runplane.testing import FakeClock
from runplane.worker import Worker
from tests.integration._worker_support import GATE, GRAPHS


@dataclass
class Observed:
    manager: RunManager
    worker: Worker
    metrics: PrometheusMetrics

    def value(self, name: str, **labels: str) -> float:
        """A sample of this process (its `process` label added), 0 when absent."""
        found = self.metrics.registry.get_sample_value(name, {**labels, "process": self.metrics.process})
        return found if found is not None else 0.0

    def gauge(self, name: str) -> float:
        found = self.metrics.registry.get_sample_value(name)
        assert found is not None, name
        return found

    async def run(self, graph_id: str, **kwargs: Any) -> Run:
        thread = await self.manager.create_thread()
        return await self.manager.create_run(
            thread.thread_id, graph_id, kwargs={"graph_id": graph_id, **kwargs}
        )


@pytest.fixture
async def observed_world(tmp_path: Path) -> AsyncIterator[Observed]:
    clock = FakeClock()
    metrics = PrometheusMetrics(process="test-process")
    store = SqliteStore.from_url(f"sqlite:///{tmp_path / 'runplane.db'}", clock=clock)
    await store.open()
    manager = RunManager(
        observed(store, metrics),
        InMemoryBus(),
        clock=clock,
        settings=ManagerSettings(lease_seconds=30, wait_fallback_seconds=0.2),
        observer=metrics,
    )
    worker = Worker(manager, LangGraphRuntime(GRAPHS, InMemorySaver()), concurrency=2, shutdown_grace=1.0)
    try:
        yield Observed(manager, worker, metrics)
    finally:
        await worker.stop()
        await store.close()


async def test_counters_and_histograms_after_real_runs(observed_world: Observed) -> None:
    world = observed_world
    for _ in range(3):
        await world.run("echo", input={"n": 1})
    await world.run("failer", input={"x": 1})
    await world.metrics.refresh(world.manager)
    assert world.gauge("runplane_queue_depth") == 4
    assert world.gauge("runplane_active_runs") == 0

    await world.worker.run_until_idle()

    assert world.value("runplane_runs_created_total", graph="echo") == 3
    assert world.value("runplane_runs_created_total", graph="failer") == 1
    assert world.value("runplane_runs_finished_total", graph="echo", status="success") == 3
    assert world.value("runplane_runs_finished_total", graph="failer", status="error") == 1
    assert world.value("runplane_run_attempts_total", graph="echo") == 3
    # Histograms observed one value per run (the clock is fake: durations are 0, counts are exact).
    assert world.value("runplane_run_duration_seconds_count", graph="echo", status="success") == 3
    assert world.value("runplane_run_duration_seconds_count", graph="failer", status="error") == 1
    assert world.value("runplane_run_queue_wait_seconds_count", graph="echo") == 3
    # Each run announced itself once; the failer's error went out as an event too.
    assert world.value("runplane_events_published_total", event="metadata") == 4
    assert world.value("runplane_events_published_total", event="error") == 1
    assert world.value("runplane_store_operations_total", operation="create_run", outcome="ok") == 4
    assert world.value("runplane_store_operations_total", operation="finish_and_look", outcome="ok") == 4
    assert world.value("runplane_store_operation_duration_seconds_count", operation="claim_and_look") >= 4
    await world.metrics.refresh(world.manager)
    assert world.gauge("runplane_queue_depth") == 0


async def test_store_errors_are_counted_as_such(observed_world: Observed) -> None:
    world = observed_world
    with pytest.raises(Exception, match="not found"):
        await world.manager.get_run("00000000-0000-0000-0000-000000000000")
    assert world.value("runplane_store_operations_total", operation="get_run", outcome="error") == 1
    assert world.value("runplane_store_operations_total", operation="get_run", outcome="ok") == 0


async def _until_event(manager: RunManager, run: Run, key: str) -> None:
    async for event in await manager.stream_run(run.run_id):
        if event.event == "custom" and key in json.loads(event.data):
            return
    raise AssertionError(f"run ended before a custom {key!r} event")


async def test_active_runs_and_cancels(observed_world: Observed) -> None:
    world = observed_world
    GATE["stopped"] = asyncio.Event()
    await world.worker.start()
    first = await world.run("blocker", input={"log": []}, stream_mode=["custom"])
    await _until_event(world.manager, first, "blocking")
    await world.metrics.refresh(world.manager)
    assert world.gauge("runplane_active_runs") == 1
    assert world.gauge("runplane_busy_workers") == 1

    interrupted = await world.manager.cancel_run(first.run_id, action="interrupt", wait=True)
    assert interrupted is not None and interrupted.status == "interrupted"
    assert world.value("runplane_cancels_total", action="interrupt") == 1
    assert world.value("runplane_runs_finished_total", graph="blocker", status="interrupted") == 1

    second = await world.run("blocker", input={"log": []}, stream_mode=["custom"])
    await _until_event(world.manager, second, "blocking")
    assert await world.manager.cancel_run(second.run_id, action="rollback", wait=True) is None
    assert world.value("runplane_cancels_total", action="rollback") == 1
    assert world.value("runplane_runs_finished_total", graph="blocker", status="rolled_back") == 1
    assert world.value("runplane_run_duration_seconds_count", graph="blocker", status="rolled_back") == 1
    await world.metrics.refresh(world.manager)
    assert world.gauge("runplane_active_runs") == 0


async def test_lease_recoveries(observed_world: Observed) -> None:
    world = observed_world
    run = await world.run("echo", input={"n": 1})
    claimed = await world.manager.claim("dead-worker")  # a worker that dies right after its claim
    assert claimed is not None and claimed.run_id == run.run_id
    clock = world.manager.clock
    assert isinstance(clock, FakeClock)
    clock.advance(31)
    [recovered] = await world.manager.recover_expired()
    assert recovered.status == "pending"
    assert world.value("runplane_lease_recoveries_total", status="pending") == 1
    assert world.value("runplane_runs_finished_total", graph="echo", status="success") == 0
    await world.worker.run_until_idle()
    # The resumed run is a second attempt of the same run: one creation, two attempts, one wait.
    assert world.value("runplane_runs_created_total", graph="echo") == 1
    assert world.value("runplane_run_attempts_total", graph="echo") == 2
    assert world.value("runplane_run_queue_wait_seconds_count", graph="echo") == 1
    assert world.value("runplane_runs_finished_total", graph="echo", status="success") == 1
