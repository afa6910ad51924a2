"""How the manager's waits (`stream_thread`, `wait_for_run`, admission behind a state update) carry
on when hints do not come: a lost hint is made up by re-reading the store every
`wait_fallback_seconds`, a bus whose hints end (closing) is polled instead, and a reader that goes
away leaves nothing pending behind. Also `stream_thread` over many runs, after a rollback, and from
an id of a run it does not know."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runplane.core.errors import ThreadReserved
from runplane.core.events import WAKEUP_CHANNEL, StreamEvent, done_channel
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Admission, Json, NewRun, Outcome, Run, RunFilter
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock

#: Long enough that a test passing within a second cannot have relied on the polling fallback.
NO_POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)
#: Polls often: for the tests of the fallback itself (they wait for the polls, never for time).
POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=0.01)


class ReadCountingStore(InMemoryStore):
    """Tells a test when a waiter re-read the store: `reads_of(run_id or thread_id, n)` is set
    once `get_run`/`list_runs` of it were called `n` times (`refused:<thread_id>`: admissions
    turned away by a state update's hold)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.reads: dict[str, int] = {}
        self._waiters: dict[tuple[str, int], asyncio.Event] = {}
        #: Rolled back (deleted) right after the next `list_runs` lists it: a rollback between a
        #: reader's listing and its read of the run.
        self.roll_back_after_listing: str | None = None
        self.rolled_back: list[str] = []

    def reads_of(self, key: str, count: int) -> asyncio.Event:
        event = self._waiters.setdefault((key, count), asyncio.Event())
        if self.reads.get(key, 0) >= count:
            event.set()
        return event

    def _read(self, key: str) -> None:
        self.reads[key] = self.reads.get(key, 0) + 1
        for (waited, count), event in self._waiters.items():
            if waited == key and self.reads[key] >= count:
                event.set()

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        run = await super().get_run(run_id, owner, thread_id)
        self._read(run_id)
        return run

    async def create_run(self, new: NewRun) -> Admission:
        try:
            return await super().create_run(new)
        except ThreadReserved:
            self._read(f"refused:{new.thread_id}")
            raise

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        runs = await super().list_runs(thread_id, owner, filter)
        doomed, self.roll_back_after_listing = self.roll_back_after_listing, None
        if doomed is not None:
            assert (await self.request_cancel(doomed, owner, "rollback", thread_id)).deleted
            self.rolled_back.append(doomed)
        self._read(thread_id)
        return runs


class HintLosingBus(InMemoryBus):
    """Loses every hint on the channels starting with `lost` (as a hint can be lost over a real
    bus); all else works."""

    def __init__(self, lost: str) -> None:
        super().__init__()
        self.lost = lost

    async def notify(self, channel: str, message: str = "") -> None:
        if not channel.startswith(self.lost):
            await super().notify(channel, message)


class ClosingBus(InMemoryBus):
    """A bus being closed: every `listen` ends at once, so a waiter gets no hint at all."""

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        async def ended() -> AsyncIterator[str]:
            return
            yield  # an async generator that ends before its first hint

        yield ended()


def _manager(
    settings: ManagerSettings, bus: InMemoryBus | None = None
) -> tuple[RunManager, ReadCountingStore]:
    clock = FakeClock()
    store = ReadCountingStore(clock)
    return RunManager(store, bus or InMemoryBus(), clock=clock, settings=settings), store


async def _until_done(events: AsyncIterator[StreamEvent], run_id: str | None) -> list[StreamEvent]:
    """The events up to and including `run_id`'s `run_done` (None: any run's)."""
    got: list[StreamEvent] = []
    async with asyncio.timeout(5):
        async for event in events:
            got.append(event)
            if event.event == "metadata" and (run_id is None or json.loads(event.data)["run_id"] == run_id):
                return got
    raise AssertionError(f"the stream ended before {run_id} was done: {got}")


async def _execute(manager: RunManager, run: Run, *values: int) -> None:
    claimed = await manager.claim("w1")
    assert claimed is not None and claimed.run_id == run.run_id
    for value in values:
        await manager.publish(claimed, "values", json.dumps({"n": value}).encode())
    await manager.finish(claimed, Outcome("success", "idle"))


def _values(events: list[StreamEvent]) -> list[object]:
    return [json.loads(e.data) for e in events if e.event == "values"]


# -- stream_thread ---------------------------------------------------------------------------------


async def test_a_thread_stream_finds_a_run_whose_hint_was_lost() -> None:
    manager, store = _manager(POLLING, HintLosingBus(WAKEUP_CHANNEL))
    thread = await manager.create_thread()
    events = await manager.stream_thread(thread.thread_id)
    reader = asyncio.create_task(_until_done(events, None))
    await store.reads_of(thread.thread_id, store.reads[thread.thread_id] + 1).wait()  # found none
    run = await manager.create_run(thread.thread_id, "agent")  # its new-run hint is lost
    await _execute(manager, run, 1)
    got = await reader
    assert _values(got) == [{"n": 1}]
    assert got[-1].id == f"{run.run_id}/done"
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_thread_stream_waits_through_quiet_polls_for_the_next_run() -> None:
    manager, store = _manager(POLLING)
    thread = await manager.create_thread()
    events = await manager.stream_thread(thread.thread_id)
    reader = asyncio.create_task(_until_done(events, None))
    first_read = store.reads[thread.thread_id]
    await store.reads_of(thread.thread_id, first_read + 3).wait()  # polled twice, found nothing
    assert not reader.done()
    run = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, run, 5)
    got = await reader
    assert _values(got) == [{"n": 5}] and got[-1].id == f"{run.run_id}/done"
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_thread_stream_polls_when_the_bus_is_closing() -> None:
    manager, store = _manager(POLLING, ClosingBus())
    thread = await manager.create_thread()
    events = await manager.stream_thread(thread.thread_id)
    reader = asyncio.create_task(_until_done(events, None))
    await store.reads_of(thread.thread_id, store.reads[thread.thread_id] + 2).wait()  # found no hint, polled
    run = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, run, 2)
    got = await reader
    assert _values(got) == [{"n": 2}] and got[-1].id == f"{run.run_id}/done"
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_reader_that_leaves_while_waiting_leaves_nothing_pending() -> None:
    manager, store = _manager(NO_POLLING)
    thread = await manager.create_thread()
    events = await manager.stream_thread(thread.thread_id)

    async def next_event() -> StreamEvent:
        return await anext(events)

    reader = asyncio.create_task(next_event())
    await store.reads_of(thread.thread_id, store.reads[thread.thread_id] + 1).wait()
    reader.cancel()
    # A wait for the hint left pending would hang the reader in its clean-up.
    done, _ = await asyncio.wait({reader}, timeout=5)
    assert done == {reader} and reader.cancelled()
    await events.aclose()  # type: ignore[attr-defined]
    # The pending wait for a hint was cancelled with it, not left running.
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_thread_stream_pages_through_many_runs() -> None:
    """More runs than one page of `list_runs`: the finished ones (on every page) are skipped."""
    manager, _ = _manager(NO_POLLING)
    thread = await manager.create_thread()
    for _ in range(101):
        old = await manager.create_run(thread.thread_id, "agent")
        await manager.cancel_run(old.run_id)  # a pending run ends at once
    assert len(await manager.list_runs(thread.thread_id, filter=RunFilter(limit=1000))) == 101
    events = await manager.stream_thread(thread.thread_id)
    run = await manager.create_run(thread.thread_id, "agent")
    reader = asyncio.create_task(_until_done(events, run.run_id))
    await _execute(manager, run, 9)
    got = await reader
    assert _values(got) == [{"n": 9}]
    assert all(event.id.startswith(f"{run.run_id}/") for event in got)  # no old run replayed
    await events.aclose()  # type: ignore[attr-defined]


async def test_a_run_rolled_back_before_it_is_read_is_passed_over() -> None:
    manager, store = _manager(NO_POLLING)
    thread = await manager.create_thread()
    doomed = await manager.create_run(thread.thread_id, "agent")
    kept = await manager.create_run(thread.thread_id, "agent")
    events = await manager.stream_thread(thread.thread_id)
    # The stream's next listing sees both runs, then `doomed` is rolled back before it is read.
    store.roll_back_after_listing = doomed.run_id
    reader = asyncio.create_task(_until_done(events, kept.run_id))
    await store.reads_of(thread.thread_id, store.reads[thread.thread_id] + 1).wait()
    assert store.rolled_back == [doomed.run_id]  # the rollback came between the two reads
    await _execute(manager, kept, 3)
    got = await reader
    assert _values(got) == [{"n": 3}]
    assert not any(event.id.startswith(f"{doomed.run_id}/") for event in got)
    await events.aclose()  # type: ignore[attr-defined]


async def test_resuming_from_a_run_the_thread_does_not_have_replays_every_run() -> None:
    manager, _ = _manager(NO_POLLING)
    thread = await manager.create_thread()
    old = await manager.create_run(thread.thread_id, "agent")
    await _execute(manager, old, 1)
    events = await manager.stream_thread(thread.thread_id, last_event_id=f"{uuid.uuid4()}/3-0")
    got = await _until_done(events, old.run_id)
    assert _values(got) == [{"n": 1}]  # the finished run is streamed again, from its start
    assert got[-1].id == f"{old.run_id}/done"
    await events.aclose()  # type: ignore[attr-defined]


# -- wait_for_run ----------------------------------------------------------------------------------


async def test_waiting_for_a_run_whose_done_hint_was_lost() -> None:
    manager, store = _manager(POLLING, HintLosingBus(done_channel("")))
    thread = await manager.create_thread()
    run = await manager.create_run(thread.thread_id, "agent")
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id, timeout=5))
    await store.reads_of(run.run_id, 3).wait()  # read, then polled twice with no hint
    assert not waiter.done()
    await _execute(manager, run, 1)
    ended = await waiter
    assert ended is not None and ended.status == "success"


async def test_waiting_for_a_run_polls_when_the_bus_is_closing() -> None:
    manager, store = _manager(POLLING, ClosingBus())
    thread = await manager.create_thread()
    run = await manager.create_run(thread.thread_id, "agent")
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id, timeout=5))
    await store.reads_of(run.run_id, 2).wait()  # read, found no hint, polled
    assert not waiter.done()
    await _execute(manager, run, 1)
    ended = await waiter
    assert ended is not None and ended.status == "success"


# -- admission behind a state update ---------------------------------------------------------------


class _HeldRuntime:
    """Just enough of a `GraphRuntime` for a state update that waits for `may_finish`."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.may_finish = asyncio.Event()

    async def update_state(self, graph_id: str, thread_id: str, values: object, **options: object) -> Json:
        self.writing.set()
        await self.may_finish.wait()
        return {"checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": "c1"}}

    async def get_state(self, graph_id: str, thread_id: str, **options: object) -> Json:
        return {"values": {"n": 1}, "next": [], "tasks": []}


async def test_an_admission_behind_a_state_update_polls_when_the_bus_is_closing() -> None:
    manager, store = _manager(POLLING, ClosingBus())
    thread = await manager.create_thread()
    runtime = _HeldRuntime()
    update = asyncio.create_task(
        manager.update_thread_state(runtime, "g", thread.thread_id, "", {"n": 1})  # type: ignore[arg-type]
    )
    await runtime.writing.wait()
    create = asyncio.create_task(manager.create_run(thread.thread_id, "agent"))
    # Turned away three times: at once, on listening, and after polling with no hint to wait for.
    await store.reads_of(f"refused:{thread.thread_id}", 3).wait()
    assert not create.done()
    runtime.may_finish.set()
    await update
    async with asyncio.timeout(5):
        run = await create
    assert run.status == "pending"
    assert (await manager.get_thread(thread.thread_id)).values == {"n": 1}
