"""`ResilientBus` batches a worker's events: one `publish_many` per delivery, order and ids kept, and
every event on the bus before the run's terminal status."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence

from runplane.core.errors import StoreUnavailable
from runplane.core.events import StreamEvent
from runplane.core.manager import RunManager
from runplane.core.models import Finished, Outcome
from runplane.events.batching import Hint, StreamBatch
from runplane.events.memory import InMemoryBus
from runplane.events.resilient import ResilientBus
from runplane.stores.memory import InMemoryStore


class BatchingBus(InMemoryBus):
    """An in-memory bus with the batch write of the shared buses; records each batch it is given,
    and holds them while `open` is clear (a slow shared bus). Its wrappers in these tests never
    yield the loop by time (`pace_seconds=inf`, only on the first event), so the batches they
    deliver do not depend on the machine's speed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[StreamBatch]] = []
        self.open = asyncio.Event()
        self.open.set()
        self.entered = asyncio.Event()

    async def publish_many(self, batches: Sequence[StreamBatch]) -> None:
        self.calls.append(list(batches))
        self.entered.set()
        await asyncio.sleep(0)  # a write on the wire: the caller's task goes on meanwhile
        await self.open.wait()
        for batch in batches:
            for event, data in batch.events:
                await self.publish(batch.run_id, event, data)
            if batch.end:
                await self.end_stream(batch.run_id)


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_queued_events_go_out_in_few_batches_in_order() -> None:
    inner = BatchingBus()
    bus = ResilientBus(inner, pace_seconds=math.inf)
    for n in range(300):
        await bus.enqueue("a", "custom", b"%d" % n)
        await bus.enqueue("b", "custom", b"%d" % n)
    await bus.end_stream("a")  # after everything queued for `a`
    await bus.flush("b")
    await bus.end_stream("b")

    for run_id in ("a", "b"):
        events = await _collect(bus.subscribe(run_id))
        assert [event.data for event in events] == [b"%d" % n for n in range(300)]
        assert [int(event.id) for event in events] == list(range(1, 301))
    # The first event left at once, alone; the rest, queued while it was on the wire, in one
    # delivery, with the end of `a` (queued behind them); the end of `b` alone, after its flush.
    assert [[(batch.run_id, len(batch.events), batch.end) for batch in call] for call in inner.calls] == [
        [("a", 1, False)],
        [("a", 299, True), ("b", 300, False)],
        [("b", 0, True)],
    ]
    assert bus.backlog_bytes == 0
    await bus.close()


async def test_a_delivery_writes_at_most_max_batch_events_of_a_run() -> None:
    inner = BatchingBus()
    bus = ResilientBus(inner, max_batch_events=500, pace_seconds=math.inf)
    for n in range(1200):
        await bus.enqueue("a", "custom", b"%d" % n)
    await bus.end_stream("a")  # after the queued events are written
    assert [len(call[0].events) for call in inner.calls] == [1, 500, 500, 199]
    assert [event.data for event in await _collect(bus.subscribe("a"))] == [b"%d" % n for n in range(1200)]
    await bus.close()


async def test_a_delivery_on_the_wire_gathers_the_next_batch() -> None:
    inner = BatchingBus()
    bus = ResilientBus(inner, pace_seconds=math.inf)
    inner.open.clear()
    await bus.enqueue("a", "custom", b"0")
    await inner.entered.wait()  # the first event left at once, alone
    for n in range(1, 100):
        await bus.enqueue("a", "custom", b"%d" % n)
    inner.open.set()
    await bus.flush("a")
    assert [len(call[0].events) for call in inner.calls] == [1, 99]
    await bus.end_stream("a")
    assert [event.data for event in await _collect(bus.subscribe("a"))] == [b"%d" % n for n in range(100)]
    await bus.close()


async def test_enqueue_waits_while_the_queue_is_over_its_high_water_mark() -> None:
    inner = BatchingBus()
    bus = ResilientBus(inner, high_water_bytes=10, pace_seconds=math.inf)
    inner.open.clear()
    await bus.enqueue("a", "custom", b"12345")
    blocked = asyncio.create_task(bus.enqueue("a", "custom", b"1234567890"))
    await inner.entered.wait()
    assert not blocked.done()  # over the mark while the bus is up: the producer waits
    inner.open.set()
    await blocked
    await bus.flush("a")
    assert bus.backlog_bytes == 0 and bus.dropped == 0
    await bus.close()


async def test_publish_latest_id_and_end_go_after_the_queued_events() -> None:
    inner = BatchingBus()
    bus = ResilientBus(inner, pace_seconds=math.inf)
    inner.open.clear()
    for n in range(3):
        await bus.enqueue("a", "custom", b"%d" % n)
    latest = asyncio.create_task(bus.latest_event_id("a"))
    published = asyncio.create_task(bus.publish("a", "custom", b"3"))
    inner.open.set()
    # A joiner from now does not see what was queued before it joined.
    assert await latest == "3"
    assert await published == "4"
    await bus.end_stream("a")
    assert [event.data for event in await _collect(bus.subscribe("a"))] == [b"0", b"1", b"2", b"3"]
    await bus.close()


class JoinOnFinish(InMemoryStore):
    """A store that, the moment a run's terminal status is stored, lets a joiner in another process
    (a manager with its own bus wrapper) stream the run, as a client arriving then would."""

    joiner: RunManager
    shared: BatchingBus
    latest_at_finish: str | None
    joining: asyncio.Task[list[StreamEvent]]

    async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        finished = await super().finish_and_look(run_id, attempt, outcome)
        # What the shared bus holds when the status is stored; the join starts now, and reads on
        # while the finish goes on (the end mark comes after it).
        self.latest_at_finish = await self.shared.latest_event_id(run_id)
        self.joining = asyncio.create_task(_collect(await self.joiner.stream_run(run_id)))
        return finished


async def test_a_joiner_after_the_terminal_status_gets_every_event() -> None:
    shared = BatchingBus()  # what every process sees (Redis, PostgreSQL)
    shared.open.clear()  # slow: the worker's delivery is still on the wire when it finishes
    store = JoinOnFinish()
    worker_side = RunManager(store, ResilientBus(shared))
    store.joiner = RunManager(store, ResilientBus(shared))
    store.shared = shared
    thread = await worker_side.create_thread()
    await worker_side.create_run(thread.thread_id, "echo")
    run = await worker_side.claim("w")
    assert run is not None
    for n in range(5):
        await worker_side.enqueue(run, "custom", b"%d" % n)  # as the worker does

    finishing = asyncio.create_task(worker_side.finish(run, Outcome("success", "idle")))
    await shared.entered.wait()
    shared.open.set()
    await finishing

    joined = await store.joining
    assert [event.data for event in joined] == [b"%d" % n for n in range(5)]
    assert store.latest_at_finish == joined[-1].id  # every event was on the bus before the status


class HintingBus(BatchingBus):
    """`BatchingBus` that also sends hints with its batches (as `RedisBus` does); `fail` makes the
    next delivery fail as an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.sent_hints: list[list[Hint]] = []
        self.alone: list[tuple[str, str]] = []
        self.lost: list[Hint] = []
        self.handed_here: list[tuple[str, str]] = []
        self.fail = False

    def hint_here(self, channel: str, message: str) -> Hint:
        self.handed_here.append((channel, message))
        for queue in self._listeners.get(channel, ()):
            queue.put_nowait(message)
        return Hint(channel, message, echo=True)

    def hint_lost(self, hint: Hint) -> None:
        self.lost.append(hint)

    async def publish_many(self, batches: Sequence[StreamBatch], hints: Sequence[Hint] = ()) -> None:
        if self.fail:
            self.fail = False
            raise StoreUnavailable("event bus unavailable: ConnectionError")
        self.sent_hints.append(list(hints))
        await super().publish_many(batches)

    async def notify(self, channel: str, message: str = "") -> None:
        self.alone.append((channel, message))
        await super().notify(channel, message)


async def test_a_hint_is_heard_here_at_once_and_sent_with_the_runs_end() -> None:
    inner = HintingBus()
    bus = ResilientBus(inner, pace_seconds=math.inf)
    async with bus.listen("done") as heard:
        await bus.enqueue("a", "custom", b"1")
        await bus.flush("a")
        # A run's end: its done hint, then its end mark, with no turn of the loop in between.
        await bus.notify("done", "a")
        assert inner.sent_hints == [[]]  # not sent yet...
        assert inner.handed_here == [("done", "a")]  # ...but handed to this process's listeners
        await bus.end_stream("a")
        assert await asyncio.wait_for(heard.__anext__(), 1) == "a"
    # The end mark and the hint in one delivery, the hint sent after the batches; none alone.
    assert [[(b.run_id, len(b.events), b.end) for b in call] for call in inner.calls] == [
        [("a", 1, False)],
        [("a", 0, True)],
    ]
    assert inner.sent_hints == [[], [Hint("done", "a", echo=True)]]
    assert inner.alone == []
    await bus.close()


async def test_a_failed_delivery_drops_its_hints_and_later_ones_go_alone_until_it_is_back() -> None:
    inner = HintingBus()
    bus = ResilientBus(inner, pace_seconds=math.inf)
    inner.fail = True
    await bus.notify("wake", "a")
    await bus.enqueue("a", "custom", b"1")  # yields the loop: one delivery of both, which fails
    await bus.flush("a")  # returns once the delivery failed: the bus is down
    assert inner.lost == [Hint("wake", "a", echo=True)]  # no copy of it will come
    await bus.notify("wake", "b")  # while down: tried alone, as a bus without batches does
    assert inner.alone == [("wake", "b")]
    await bus.end_stream("a")  # the events are delivered once the bus answers again
    assert [event.data for event in await _collect(bus.subscribe("a"))] == [b"1"]
    await bus.close()
