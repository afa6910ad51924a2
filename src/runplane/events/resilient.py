"""`ResilientBus`: a shared bus (Redis, PostgreSQL) whose outage degrades runplane instead of failing it.

The bus carries hints and streams; the database holds the truth. So while the bus is down:

- `notify` drops the hint (logged): every listener has a store-reading fallback (workers poll the
  queue and read cancel requests at each heartbeat, joiners re-read the run).
- `listen` that cannot register listens to nothing rather than failing: same fallbacks.
- `publish` and `end_stream` do not fail the caller (a worker executing a run): the events are
  kept in order in this process, bounded by `max_backlog_bytes` in all, and a background task
  delivers them, with backoff and jitter, once the bus answers again. A run's later events queue
  behind its backlog, so the stream keeps its order; the end mark comes last. A stream client cut off
  by the outage gets an `error` event (its read failed) and resumes with `Last-Event-ID` to get
  everything, the buffered events included. Only if the backlog overflows, or this process dies
  during the outage, are buffered events lost (the oldest first, logged).
- `subscribe` fails as before (`StoreUnavailable`): there is nothing to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from runplane.core.errors import StoreUnavailable
from runplane.core.events import EventBus, StreamEvent

logger = logging.getLogger(__name__)

#: Marks the end of a stream in a backlog (an event name no publisher uses).
_END = "\x00end"
_RETRY_FIRST, _RETRY_CAP = 0.05, 1.0


class ResilientBus:
    """Wraps `inner` so that its outages never fail a publisher (see the module doc).

    Args:
        inner: the shared bus.
        max_backlog_bytes: payload bytes buffered, over every run, while `inner` is down.
    """

    def __init__(self, inner: EventBus, *, max_backlog_bytes: int = 64 * 2**20) -> None:
        self.inner = inner
        self.max_backlog_bytes = max_backlog_bytes
        #: run id -> events not delivered yet, oldest first (insertion order: oldest run first).
        self._backlog: OrderedDict[str, deque[tuple[str, bytes]]] = OrderedDict()
        self._backlog_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
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
        if run_id not in self._backlog:
            try:
                return await self.inner.publish(run_id, event, data)
            except StoreUnavailable as exc:
                logger.warning(
                    "event bus down; buffering the stream of run %s: %s",
                    run_id,
                    exc,
                    extra={"action": "bus_buffer", "run_id": run_id},
                )
        self._buffer(run_id, event, data)
        return ""

    async def end_stream(self, run_id: str) -> None:
        if run_id not in self._backlog:
            try:
                await self.inner.end_stream(run_id)
                return
            except StoreUnavailable as exc:
                logger.warning(
                    "event bus down; ending the stream of run %s later: %s",
                    run_id,
                    exc,
                    extra={"action": "bus_buffer", "run_id": run_id},
                )
        self._buffer(run_id, _END, b"")

    def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        return self.inner.subscribe(run_id, last_event_id)

    def _buffer(self, run_id: str, event: str, data: bytes) -> None:
        # An exact-size copy: an encoder's bytes may keep a much larger buffer (see `events.memory`).
        data = bytes(memoryview(data)) if len(data) >= 64 * 1024 else data
        self._backlog.setdefault(run_id, deque()).append((event, data))
        self._backlog_bytes += len(data)
        while self._backlog_bytes > self.max_backlog_bytes:
            self._drop_oldest()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="runplane-bus-backlog")

    def _drop_oldest(self) -> None:
        run_id, events = next(iter(self._backlog.items()))
        # Never drop an end mark: without it, the run's subscribers would wait for ever.
        for index, (event, data) in enumerate(events):
            if event != _END:
                del events[index]
                self._backlog_bytes -= len(data)
                self.dropped += 1
                logger.warning(
                    "event backlog over %d bytes: dropped an event of run %s",
                    self.max_backlog_bytes,
                    run_id,
                    extra={"action": "bus_buffer", "run_id": run_id},
                )
                return
        self._backlog.move_to_end(run_id)  # only end marks: make room from the next run

    async def _flush(self) -> None:
        """Deliver every backlog in order, waiting (backoff with jitter) while the bus is down."""
        delay = _RETRY_FIRST
        while self._backlog:
            run_id, events = next(iter(self._backlog.items()))
            try:
                replay = getattr(self.inner, "replay", None)
                if replay is not None:
                    # One step for the whole backlog, which also puts our end after a reader's guard.
                    batch = list(events)
                    ended = bool(batch) and batch[-1][0] == _END
                    await replay(run_id, [e for e in batch if e[0] != _END], end=ended)
                    for _ in batch:
                        self._backlog_bytes -= len(events.popleft()[1])
                while events:
                    event, data = events[0]
                    if event == _END:
                        await self.inner.end_stream(run_id)
                    else:
                        await self.inner.publish(run_id, event, data)
                    events.popleft()
                    self._backlog_bytes -= len(data)
            except StoreUnavailable:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(_RETRY_CAP, delay * 2)
                continue
            except Exception:
                logger.exception("delivering the buffered events of run %s failed", run_id)
                self._backlog_bytes -= sum(len(data) for _, data in events)
                events.clear()
            delay = _RETRY_FIRST
            if not events:
                self._backlog.pop(run_id, None)
                logger.info(
                    "event bus back; delivered the buffered stream of run %s",
                    run_id,
                    extra={"action": "bus_buffer", "run_id": run_id},
                )

    # -- hints ----------------------------------------------------------------------------------

    async def notify(self, channel: str, message: str = "") -> None:
        try:
            await self.inner.notify(channel, message)
        except StoreUnavailable as exc:
            logger.warning("dropped hint on %s: %s", channel, exc, extra={"action": "bus_notify"})

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
        await self.inner.close()


async def _silence() -> AsyncIterator[str]:
    await asyncio.Event().wait()
    yield ""  # pragma: no cover - never reached
