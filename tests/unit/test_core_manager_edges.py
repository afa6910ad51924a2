"""`RunManager` use-cases the other unit tests leave aside: deleting a running run, joining a stream
from now, webhook URL checks, queue figures and the protocol adapters' follow-ups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runplane.core.errors import Conflict, InvalidInput, NotFound
from runplane.core.events import StreamEvent, cancel_channel
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome, Run, RunFilter
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock, memory_manager

NO_POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)


class RefusingGuard:
    """Refuses every URL but those under `https://ok.example/`."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check(self, url: str) -> None:
        self.checked.append(url)
        if not url.startswith("https://ok.example/"):
            raise InvalidInput(f"Webhook host blocked: {url}")


@pytest.fixture
def manager() -> RunManager:
    return memory_manager(clock=FakeClock(), settings=NO_POLLING)


async def _running(manager: RunManager, thread_id: str = "t1") -> Run:
    created = await manager.create_run(thread_id, "agent", if_not_exists="create")
    run = await manager.claim("w1")
    assert run is not None and run.run_id == created.run_id
    return run


async def test_a_running_run_is_deleted_only_once_its_worker_stopped(manager: RunManager) -> None:
    run = await _running(manager)
    with pytest.raises(Conflict):
        await manager.delete_run(run.run_id, thread_id=run.thread_id)

    async with manager.listen(cancel_channel("w1")) as cancels:

        async def worker_obeys_the_cancel() -> None:
            # The worker hears the cancel and records the run interrupted, as `Worker` does.
            async with asyncio.timeout(2):
                assert await anext(cancels) == run.run_id
            await manager.finish(run, Outcome("interrupted", "idle"))

        worker = asyncio.create_task(worker_obeys_the_cancel())
        await manager.delete_run(run.run_id, thread_id=run.thread_id, stop_running=True)
        await worker
    with pytest.raises(NotFound):
        await manager.get_run(run.run_id)
    assert await manager.list_runs(run.thread_id, filter=RunFilter()) == []


async def test_joining_a_started_run_from_now_skips_what_was_published(manager: RunManager) -> None:
    run = await _running(manager)
    await manager.publish(run, "values", b'{"n":1}')
    events = await manager.stream_run(run.run_id, from_now=True)
    reader = asyncio.create_task(_collect(events))
    await asyncio.sleep(0)
    await manager.publish(run, "values", b'{"n":2}')
    await manager.finish(run, Outcome("success", "idle"))
    assert [json.loads(e.data) for e in await reader if e.event == "values"] == [{"n": 2}]
    # From the start (no `from_now`), an ended run replays everything still on the bus.
    replay = await _collect(await manager.stream_run(run.run_id))
    assert [json.loads(e.data) for e in replay if e.event == "values"] == [{"n": 1}, {"n": 2}]


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    async with asyncio.timeout(2):
        return [event async for event in events]


async def test_webhook_urls_are_checked_by_the_guard() -> None:
    guard = RefusingGuard()
    manager = RunManager(InMemoryStore(), InMemoryBus(), url_guard=guard)
    await manager.check_webhook(None)
    await manager.check_webhook("https://ok.example/hook")
    with pytest.raises(InvalidInput, match="blocked"):
        await manager.check_webhook("http://10.0.0.1/hook")
    with pytest.raises(InvalidInput, match="must be a URL"):
        await manager.check_webhook(["https://ok.example/hook"])
    assert guard.checked == ["https://ok.example/hook", "http://10.0.0.1/hook"]
    # Without a guard nothing is refused (embedded use, tests).
    await memory_manager().check_webhook("http://10.0.0.1/hook")


async def test_queue_stats_count_every_owner(manager: RunManager) -> None:
    await _running(manager, "t1")
    await manager.create_run("t2", "agent", "alice", if_not_exists="create")
    await manager.create_run("t3", "agent", "bob", if_not_exists="create")
    stats = await manager.queue_stats()
    assert (stats.pending, stats.running, stats.busy_workers) == (2, 1, 1)


async def test_a_new_run_is_hinted_and_followed(manager: RunManager) -> None:
    async with manager.new_run_hints() as hints:
        created = await manager.create_run("t1", "agent", if_not_exists="create")
        async with asyncio.timeout(1):
            await anext(hints)
    followed = asyncio.create_task(_collect(manager.follow_new_run(created.run_id)))
    run = await manager.claim("w1")
    assert run is not None
    await manager.publish(run, "values", b'{"n":1}')
    await manager.finish(run, Outcome("success", "idle"))
    assert [e.data for e in await followed if e.event == "values"] == [b'{"n":1}']


async def test_the_webhook_outbox_is_empty_without_webhooks(manager: RunManager) -> None:
    run = await _running(manager)
    await manager.finish(run, Outcome("success", "idle"))
    assert await manager.list_webhooks() == []
    assert await manager.next_webhook_due() is None


@pytest.mark.parametrize("follow", ["stream_run", "follow_new_run"])
async def test_a_reader_ends_when_the_run_ended_without_its_end_mark(follow: str) -> None:
    """The worker was killed between the run's terminal commit and its end mark (simulated: the
    store ends the run, nothing ends its stream). A reader already following ends all the same,
    within a fallback period, with every event the run published; it used to wait for ever."""
    manager = memory_manager(clock=FakeClock(), settings=ManagerSettings(wait_fallback_seconds=0.01))
    run = await _running(manager)
    await manager.publish(run, "values", b'{"n":1}')
    events = (
        await manager.stream_run(run.run_id) if follow == "stream_run" else manager.follow_new_run(run.run_id)
    )
    reading = asyncio.create_task(_collect(events))
    await manager.store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))
    async with asyncio.timeout(10):  # liveness bound: without the watch it never ends
        read = await reading
    assert [e.data for e in read if e.event == "values"] == [b'{"n":1}']


async def test_a_reader_waits_for_events_still_coming_after_the_run_ended() -> None:
    """A worker that buffered its run's events through a bus outage delivers them, and its end
    mark, after the run ended in the store. A reader's watch that finds the run over must not end
    the stream then (an end mark drops later events): only once it stayed still for a period."""
    manager = memory_manager(clock=FakeClock(), settings=ManagerSettings(wait_fallback_seconds=0.01))
    run = await _running(manager)
    await manager.publish(run, "values", b'{"n":1}')
    events = await manager.stream_run(run.run_id)
    reading = asyncio.create_task(_collect(events))
    looked = asyncio.Event()
    bus: Any = manager.bus
    for name in ("latest_event_id", "end_stream"):  # how the watch's first look ends, either way
        original = getattr(bus, name)

        async def observed(*args: Any, _original: Any = original) -> Any:
            try:
                return await _original(*args)
            finally:
                looked.set()

        setattr(bus, name, observed)
    await manager.store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))
    await looked.wait()  # the run is over, the buffered events are not delivered yet
    await manager.publish(run, "values", b'{"n":2}')  # the bus is back: the worker delivers them
    await bus.end_stream(run.run_id)  # and its own end mark
    async with asyncio.timeout(10):
        read = await reading
    assert [e.data for e in read if e.event == "values"] == [b'{"n":1}', b'{"n":2}']
