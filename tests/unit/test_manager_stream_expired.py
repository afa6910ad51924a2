"""A finished run whose stream already left the bus must not hang its subscribers."""

from __future__ import annotations

import asyncio

from runplane.core.manager import RunManager
from runplane.core.models import Outcome
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore


async def test_stream_of_a_run_whose_stream_expired_ends_at_once() -> None:
    bus = InMemoryBus(retention_seconds=0.0)
    manager = RunManager(InMemoryStore(), bus)
    thread = await manager.create_thread()
    run = await manager.create_run(thread.thread_id, "echo")
    claimed = await manager.claim("w")
    assert claimed is not None
    await manager.publish(claimed, "values", b"{}")
    await manager.finish(claimed, Outcome("success", "idle"))
    await bus.publish("other", "values", b"{}")  # any bus activity expires ended streams

    events = await manager.stream_run(run.run_id)
    received = await asyncio.wait_for(_collect(events), timeout=2)
    assert received == []


async def _collect(events):
    return [event async for event in events]
