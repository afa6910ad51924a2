"""`ResilientBus`: a shared bus (Redis, PostgreSQL) that batches a run's events and whose outage
degrades runplane instead of failing it.

Batching: a worker's events go through `enqueue`, which queues them in this process and returns; a
background task delivers everything queued meanwhile, for every run, in one `publish_many` call of the
inner bus (one INSERT, one Redis round trip). While one delivery is on the wire the next batch gathers,
so a run streaming thousands of events costs a few round trips (at most `max_batch_events` of a run
each), and the first event of a quiet run still leaves at the next loop tick: `enqueue` yields the
loop once per `pace_seconds`, so a graph's burst of ready chunks does not hold its own first events
back (see `batching.Pacer`). The queue is bounded (`high_water_bytes`): a producer faster than
the bus waits for deliveries rather than growing it. `flush(run_id)` waits until the run's queue is
written; the worker calls it before storing a terminal status, so a joiner that reads that status finds
every event on the bus. `publish`, `end_stream` and `latest_event_id` of a run with queued events
go after them, so ids, order and join-from-now stay as if every event had been written at once.

Hints go the same way on a bus that can send them with its batches (`SupportsBatchedHints`: Redis,
PostgreSQL): `notify` hands a hint to this process's listeners at once and queues it for the next
delivery, so it costs no round trip of its own, and a run's done hint leaves in the same step as its
end mark.

The bus carries hints and streams; the database holds the truth. So while the bus is down:

- `notify` drops the hint (logged): every listener has a store-reading fallback (workers poll the
  queue and read cancel requests at each heartbeat, joiners re-read the run).
- `listen` that cannot register listens to nothing rather than failing: same fallbacks.
- `publish`, `enqueue` and `end_stream` do not fail the caller (a worker executing a run): the events
  are kept in order in this process, bounded by `max_backlog_bytes` in all, and the background task
  delivers them, with backoff and jitter, once the bus answers again (with the inner bus's `replay`
  when it has one). A run's later events queue behind its backlog, so the stream keeps its order; the
  end mark comes last. `flush` returns while the bus is down (the events stay queued). A stream client
  cut off by the outage gets an `error` event (its read failed) and resumes with `Last-Event-ID` to
  get everything, the buffered events included. Only if the backlog overflows, or this process dies
  during the outage, are buffered events lost (the oldest first, logged).
- `subscribe` fails as before (`StoreUnavailable`): there is nothing to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from runplane.core.errors import StoreUnavailable
from runplane.core.events import EventBus, StreamEvent
from runplane.events.batching import Hint, Pacer, StreamBatch, SupportsBatchedHints, SupportsPublishMany

logger = logging.getLogger(__name__)

#: Marks the end of a stream in a backlog (an event name no publisher uses).
_END = "\x00end"
_RETRY_FIRST, _RETRY_CAP = 0.05, 1.0


class _Backlog:
    """One run's events not delivered yet, oldest first."""

    __slots__ = ("events", "in_flight", "replay")

    def __init__(self) -> None:
        self.events: deque[tuple[str, bytes]] = deque()
        #: How many of the first events the current delivery is writing: never dropped meanwhile.
        self.in_flight = 0
        #: A delivery failed (or a direct write did): the bus may have lost or half-written this
        #: stream, so the rest goes through the inner bus's `replay` (see `RedisBus.replay`).
        self.replay = False

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1][0] == _END


class ResilientBus:
    """Wraps `inner`: batches `enqueue`d events, and its outages never fail a publisher (see the
    module doc).

    Args:
        inner: the shared bus.
        max_backlog_bytes: payload bytes buffered, over every run, while `inner` is down.
        high_water_bytes: payload bytes queued, over every run, beyond which `enqueue` waits for a
            delivery while `inner` is up.
        max_batch_events: events of one run one delivery writes at most: a run that queued
            thousands at once has its first ones readable while the rest are written.
        pace_seconds: how long `enqueue` may run without yielding the loop (see `Pacer`).
    """

    def __init__(
        self,
        inner: EventBus,
        *,
        max_backlog_bytes: int = 64 * 2**20,
        high_water_bytes: int = 4 * 2**20,
        max_batch_events: int = 500,
        pace_seconds: float = 0.001,
    ) -> None:
        self.inner = inner
        # Asked once: `isinstance` against a runtime-checkable protocol inspects its members.
        self._publish_many = inner.publish_many if isinstance(inner, SupportsPublishMany) else None
        self._hinting = inner if isinstance(inner, SupportsBatchedHints) else None
        #: Hints to send with the next delivery (only while the bus is up).
        self._hints: list[Hint] = []
        self.max_batch_events = max(1, max_batch_events)
        self._pacer = Pacer(pace_seconds)
        self.max_backlog_bytes = max_backlog_bytes
        self.high_water_bytes = min(high_water_bytes, max_backlog_bytes)
        #: run id -> events not delivered yet (insertion order: oldest run first).
        self._backlog: OrderedDict[str, _Backlog] = OrderedDict()
        self._backlog_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        #: The last delivery failed: the bus is down until one succeeds.
        self._down = False
        #: Replaced after every delivery attempt; waiters hold the old one, which is set.
        self._delivered = asyncio.Event()
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<ResilientBus {self.inner!r} backlog={len(self._backlog)} runs/{self._backlog_bytes} B>"

    def __getattr__(self, name: str) -> Any:
        # Anything else the inner bus offers (e.g. `ping`) is its own.
        return getattr(self.inner, name)

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    # -- streams --------------------------------------------------------------------------------

    async def publish(self, run_id: str, event: str, data: bytes) -> str:
        await self.flush(run_id)
        if run_id not in self._backlog:
            try:
                return await self.inner.publish(run_id, event, data)
            except StoreUnavailable as exc:
                self._warn_buffering(run_id, exc)
        self._buffer(run_id, event, data, replay=True)
        return ""

    async def enqueue(self, run_id: str, event: str, data: bytes) -> None:
        self._buffer(run_id, event, data)
        # The first event of a burst starts its delivery at once, and the burst lets it progress.
        await self._pacer.pace()
        while self._backlog_bytes > self.high_water_bytes and not self._down:
            await self._delivered.wait()

    async def flush(self, run_id: str) -> None:
        while run_id in self._backlog and not self._down:
            await self._delivered.wait()

    async def end_stream(self, run_id: str) -> None:
        if self._publish_many is not None:
            # Queued like an event: it goes out with the run's last events, and with the other
            # runs' deliveries of the moment (runs that end together share one write).
            self._buffer(run_id, _END, b"")
            await self.flush(run_id)
            return
        await self.flush(run_id)
        if run_id not in self._backlog:
            try:
                await self.inner.end_stream(run_id)
                return
            except StoreUnavailable as exc:
                self._warn_buffering(run_id, exc)
        self._buffer(run_id, _END, b"", replay=True)

    async def latest_event_id(self, run_id: str) -> str | None:
        # Events queued before the join are before it: written first, they are not shown to it.
        await self.flush(run_id)
        return await self.inner.latest_event_id(run_id)

    def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        return self.inner.subscribe(run_id, last_event_id)

    def subscribe_batches(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[list[StreamEvent]]:
        return self.inner.subscribe_batches(run_id, last_event_id)

    @staticmethod
    def _warn_buffering(run_id: str, exc: StoreUnavailable) -> None:
        logger.warning(
            "event bus down; buffering the stream of run %s: %s",
            run_id,
            exc,
            extra={"action": "bus_buffer", "run_id": run_id},
        )

    def _buffer(self, run_id: str, event: str, data: bytes, *, replay: bool = False) -> None:
        backlog = self._backlog.get(run_id)
        if backlog is None:
            backlog = self._backlog[run_id] = _Backlog()
        elif backlog.ended:
            return  # after the end mark: the inner bus would drop it too
        backlog.replay = backlog.replay or replay
        # An exact-size copy: an encoder's bytes may keep a much larger buffer (see `events.memory`).
        data = bytes(memoryview(data)) if len(data) >= 64 * 1024 else data
        backlog.events.append((event, data))
        self._backlog_bytes += len(data)
        while self._backlog_bytes > self.max_backlog_bytes and self._drop_oldest():
            pass
        self._start_delivering()

    def _start_delivering(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="runplane-bus-backlog")

    def _drop_oldest(self) -> bool:
        """Drop the oldest event that no delivery is writing; False when there is none."""
        for run_id, backlog in self._backlog.items():
            # Never drop an end mark: without it, the run's subscribers would wait for ever.
            for index in range(backlog.in_flight, len(backlog.events)):
                event, data = backlog.events[index]
                if event != _END:
                    del backlog.events[index]
                    self._backlog_bytes -= len(data)
                    if not backlog.events:
                        del self._backlog[run_id]  # not in flight (it had nothing left to write)
                    self.dropped += 1
                    logger.warning(
                        "event backlog over %d bytes: dropped an event of run %s",
                        self.max_backlog_bytes,
                        run_id,
                        extra={"action": "bus_buffer", "run_id": run_id},
                    )
                    return True
        return False

    def _signal(self, *, down: bool) -> None:
        self._down = down
        self._delivered.set()
        self._delivered = asyncio.Event()

    async def _flush(self) -> None:
        """Deliver every backlog in order, waiting (backoff with jitter) while the bus is down."""
        delay = _RETRY_FIRST
        while self._backlog or self._hints:
            try:
                await self._deliver()
            except StoreUnavailable:
                for backlog in self._backlog.values():
                    backlog.in_flight = 0
                    backlog.replay = True
                self._signal(down=True)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(_RETRY_CAP, delay * 2)
                continue
            except Exception:
                # Never leave a backlog behind a dead flusher (its runs' `flush` would wait for ever).
                logger.exception("delivering the buffered events failed; dropping them")
                for run_id, backlog in list(self._backlog.items()):
                    self._delivered_prefix(run_id, backlog, backlog.in_flight)
            delay = _RETRY_FIRST
            self._signal(down=False)

    async def _deliver(self) -> None:
        """One delivery: every batchable backlog in one `publish_many`, then the others one by one.
        What is delivered leaves the backlog at once, so a failure never repeats it."""
        batched: list[tuple[str, _Backlog]] = []
        single: list[tuple[str, _Backlog]] = []
        for run_id, backlog in self._backlog.items():
            backlog.in_flight = min(len(backlog.events), self.max_batch_events)
            (single if backlog.replay else batched).append((run_id, backlog))
        hints, self._hints = self._hints, []
        if (batched or hints) and self._publish_many is not None:
            batches = []
            for run_id, backlog in batched:
                events = list(itertools.islice(backlog.events, backlog.in_flight))
                ended = events[-1][0] == _END  # an end mark is always the last of its backlog
                batches.append(StreamBatch(run_id, events[:-1] if ended else events, ended))
            # Hints are only queued for a bus that sends them with its batches.
            delivery = (
                self._publish_many(batches)
                if self._hinting is None
                else self._hinting.publish_many(batches, hints)
            )
            try:
                await self._guarded(delivery, [run_id for run_id, _ in batched])
            except StoreUnavailable as exc:
                self._drop_hints(hints, exc)  # the events are tried again; hints are only hints
                raise
            for run_id, backlog in batched:
                self._delivered_prefix(run_id, backlog, backlog.in_flight)
        else:
            single = batched + single
        for run_id, backlog in single:
            await self._deliver_one(run_id, backlog)

    async def _deliver_one(self, run_id: str, backlog: _Backlog) -> None:
        replay = getattr(self.inner, "replay", None)
        if replay is not None and backlog.replay:
            # One step for the whole backlog, which also puts our end after a reader's guard.
            batch = list(itertools.islice(backlog.events, backlog.in_flight))
            ended = bool(batch) and batch[-1][0] == _END
            await self._guarded(replay(run_id, [e for e in batch if e[0] != _END], end=ended), [run_id])
            self._delivered_prefix(run_id, backlog, len(batch))
            return
        while backlog.in_flight:
            event, _data = backlog.events[0]
            if event == _END:
                await self._guarded(self.inner.end_stream(run_id), [run_id])
            else:
                await self._guarded(self.inner.publish(run_id, event, _data), [run_id])
            self._delivered_prefix(run_id, backlog, 1)

    async def _guarded(self, call: Any, run_ids: list[str]) -> None:
        """Await a delivery; anything but the bus being down loses its events (logged), rather than
        retrying for ever what the bus refuses."""
        try:
            await call
        except StoreUnavailable:
            raise
        except Exception:
            logger.exception("delivering the buffered events of runs %s failed", ", ".join(run_ids))

    def _delivered_prefix(self, run_id: str, backlog: _Backlog, count: int) -> None:
        for _ in range(count):
            self._backlog_bytes -= len(backlog.events.popleft()[1])
        backlog.in_flight -= count
        if not backlog.events and self._backlog.get(run_id) is backlog:
            del self._backlog[run_id]
            if backlog.replay:
                logger.info(
                    "event bus back; delivered the buffered stream of run %s",
                    run_id,
                    extra={"action": "bus_buffer", "run_id": run_id},
                )

    # -- hints ----------------------------------------------------------------------------------

    async def notify(self, channel: str, message: str = "") -> None:
        if self._hinting is not None and not self._down:
            # Heard in this process now; sent to the others with the next delivery, which starts
            # at the loop's next turn: no round trip of its own, and a run's done hint leaves with
            # its end mark (after it).
            self._hints.append(self._hinting.hint_here(channel, message))
            self._start_delivering()
            return
        try:
            await self.inner.notify(channel, message)
        except StoreUnavailable as exc:
            logger.warning("dropped hint on %s: %s", channel, exc, extra={"action": "bus_notify"})

    def _drop_hints(self, hints: list[Hint], exc: StoreUnavailable) -> None:
        for hint in hints:
            assert self._hinting is not None  # only such a bus had hints queued
            self._hinting.hint_lost(hint)
            logger.warning("dropped hint on %s: %s", hint.channel, exc, extra={"action": "bus_notify"})

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                hints = await stack.enter_async_context(self.inner.listen(channel))
            except StoreUnavailable as exc:
                # Listening to nothing is safe: every listener also reads the store on a timer.
                logger.warning("not listening on %s: %s", channel, exc, extra={"action": "bus_listen"})
                hints = _silence()
            yield hints

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            # A last chance for what is buffered, without holding shutdown for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._flusher), timeout=2.0)
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._signal(down=True)  # nobody waits on a bus that is gone
        await self.inner.close()


async def _silence() -> AsyncIterator[str]:
    await asyncio.Event().wait()
    yield ""  # pragma: no cover - never reached
