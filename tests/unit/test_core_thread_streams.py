"""`RunManager.stream_thread` (`core.thread_streams`): a thread's runs one after the other, each
followed by LangGraph's `run_done` metadata event, resumable by `<run_id>/<event id>`."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from runplane.core.errors import InvalidInput, NotFound
from runplane.core.events import StreamEvent
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome, Run
from runplane.core.thread_streams import parse_thread_event_id, thread_event_id
from runplane.testing import memory_manager

#: Long enough that a test passing within a second cannot have relied on the polling fallback.
NO_POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)


@pytest.fixture
def manager() -> RunManager:
    return memory_manager(settings=NO_POLLING)


async def _until_done(events: AsyncIterator[StreamEvent], run_id: str) -> list[StreamEvent]:
    """The events up to and including `run_id`'s `run_done`."""
    got: list[StreamEvent] = []
    async with asyncio.timeout(5):
        async for event in events:
            got.append(event)
            if event.event == "metadata" and json.loads(event.data).get("run_id") == run_id:
                return got
    raise AssertionError(f"the stream ended before {run_id} was done: {got}")


async def _execute(manager: RunManager, run: Run, *values: int) -> None:
    claimed = await manager.claim("w1")
    assert claimed is not None and claimed.run_id == run.run_id
    for value in values:
        await manager.publish(claimed, "values", json.dumps({"n": value}).encode())
    await manager.finish(claimed, Outcome("success", "idle"))


def test_event_ids_carry_the_run() -> None:
    run_id = str(uuid.uuid4())
    assert parse_thread_event_id(thread_event_id(run_id, "7-0")) == (run_id, "7-0")
    assert parse_thread_event_id(run_id) == (run_id, None)
    assert parse_thread_event_id(f"{run_id}/") == (run_id, None)
    with pytest.raises(InvalidInput, match="last-event-id"):
        parse_thread_event_id("not-a-run/1")


async def test_follows_new_runs_and_skips_finished_ones(manager: RunManager) -> None:
    thread = await manager.create_thread()
    old = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, old, 0)

    events = await manager.stream_thread(thread.thread_id)
    first = await manager.create_run(thread.thread_id, "agent")
    reader = asyncio.create_task(_until_done(events, first.run_id))
    await _execute(manager, first, 1, 2)
    got = await reader
    values = [json.loads(e.data) for e in got if e.event == "values"]
    assert values == [{"n": 1}, {"n": 2}]  # the finished run before the stream is not replayed
    assert all(e.id.startswith(f"{first.run_id}/") for e in got)
    assert got[-1].id == f"{first.run_id}/done"
    assert json.loads(got[-1].data) == {"status": "run_done", "run_id": first.run_id}

    # The same stream goes on with the next run on the thread.
    second = await manager.create_run(thread.thread_id, "agent")
    reader = asyncio.create_task(_until_done(events, second.run_id))
    await _execute(manager, second, 3)
    assert [json.loads(e.data) for e in await reader if e.event == "values"] == [{"n": 3}]
    await events.aclose()  # type: ignore[attr-defined]


async def test_resumes_after_the_last_event_id(manager: RunManager) -> None:
    thread = await manager.create_thread()
    first = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, first, 1, 2)
    second = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, second, 3)

    everything = await _until_done(
        await manager.stream_thread(thread.thread_id, last_event_id=f"{first.run_id}"), second.run_id
    )
    assert [json.loads(e.data)["n"] for e in everything if e.event == "values"] == [1, 2, 3]

    first_value = next(e for e in everything if e.event == "values")
    rest = await _until_done(
        await manager.stream_thread(thread.thread_id, last_event_id=first_value.id), second.run_id
    )
    assert [json.loads(e.data)["n"] for e in rest if e.event == "values"] == [2, 3]

    after_first = await _until_done(
        await manager.stream_thread(thread.thread_id, last_event_id=f"{first.run_id}/done"), second.run_id
    )
    assert [json.loads(e.data)["n"] for e in after_first if e.event == "values"] == [3]


async def test_refuses_unknown_threads_and_foreign_ids(manager: RunManager) -> None:
    thread = await manager.create_thread()
    with pytest.raises(NotFound):
        await manager.stream_thread(str(uuid.uuid4()))
    with pytest.raises(InvalidInput):
        await manager.stream_thread(thread.thread_id, last_event_id="1-0")


async def test_ends_when_the_thread_is_deleted(manager: RunManager) -> None:
    thread = await manager.create_thread()
    events = await manager.stream_thread(thread.thread_id)
    reader = asyncio.create_task(_until_done(events, "never"))
    await asyncio.sleep(0)
    await manager.delete_thread(thread.thread_id)
    # Deleting sends no new-run hint: a run admitted elsewhere wakes the follower, which finds
    # its thread gone and ends the stream.
    await manager.create_run(str(uuid.uuid4()), "agent", if_not_exists="create")
    with pytest.raises(AssertionError, match="the stream ended"):
        await reader
