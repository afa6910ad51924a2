"""`GET /threads/{id}/stream` waits for the thread's next run without holding a database connection:
with a one-connection PostgreSQL pool (and SQLite's single connection), several thread streams wait
while runs are created, executed and finished through the same store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest

from runplane.core.events import StreamEvent
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome
from runplane.events.memory import InMemoryBus
from runplane.stores import open_store
from tests._services import postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runplane.db'}"
        return
    with postgres_database() as url:
        # One connection: a stream that kept it while waiting would starve every other call.
        yield f"{url}?pool_min_size=1&pool_max_size=1&pool_timeout=5"


async def _until_done(events: AsyncIterator[StreamEvent], runs: int) -> list[StreamEvent]:
    seen: list[StreamEvent] = []
    async for event in events:
        seen.append(event)
        if sum(1 for e in seen if e.event == "metadata" and b"run_done" in e.data) == runs:
            return seen
    return seen


async def test_waiting_thread_streams_hold_no_connection(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    manager = RunManager(store, InMemoryBus(), settings=ManagerSettings(wait_fallback_seconds=30))
    try:
        thread = await manager.create_thread()
        streams = [await manager.stream_thread(thread.thread_id) for _ in range(3)]
        listening = [asyncio.create_task(_until_done(s, 2)) for s in streams]
        await asyncio.sleep(0)  # let them start waiting; nothing below may depend on more
        async with asyncio.timeout(20):
            for n in range(2):
                created = await manager.create_run(thread.thread_id, "agent", kwargs={"input": {"n": n}})
                run = await manager.claim("w1")
                assert run is not None and run.run_id == created.run_id
                await manager.publish(run, "values", orjson.dumps({"n": n}))
                await manager.finish(run, Outcome("success", "idle"))
            results = await asyncio.gather(*listening)
        for events in results:
            assert [e.event for e in events] == ["values", "metadata", "values", "metadata"]
            assert [orjson.loads(e.data) for e in events if e.event == "values"] == [{"n": 0}, {"n": 1}]
    finally:
        await manager.bus.close()
        await store.close()
