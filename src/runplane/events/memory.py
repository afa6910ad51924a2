"""`InMemoryBus`: run streams and hints inside one process.

Each run's stream keeps its events for replay (Last-Event-ID), bounded by count and bytes. An ended
stream is forgotten `retention_seconds` after its end, by a timer (an idle server frees it too), or
sooner, oldest first, when the ended streams together hold more than `max_retained_bytes`. So the
memory a process holds for finished runs is at most `max_retained_bytes` (64 MiB by default) plus
one stream, whatever the history; live streams hold at most `max_bytes` each.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runplane.core.errors import InvalidInput
from runplane.core.events import StreamEvent

#: Payloads this large are copied before they are kept: orjson returns a bytes object that keeps
#: the whole buffer it grew while encoding (about 15 times a 4 MiB payload), which `len` does not
#: show; a copy is exactly its length, so the byte bounds below bound memory.
_COMPACT_BYTES = 64 * 1024


class _Stream:
    __slots__ = ("bytes", "changed", "ended_at", "events", "first_seq", "next_seq")

    def __init__(self) -> None:
        self.events: deque[StreamEvent] = deque()
        self.next_seq = 1
        #: Sequence of `events[0]`; lower ones were trimmed.
        self.first_seq = 1
        self.bytes = 0
        self.ended_at: float | None = None
        # Replaced on every change: waiters hold the old one, which is set.
        self.changed = asyncio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def parse_event_id(last_event_id: str | None) -> int:
    """The sequence number in an event id; 0 means "from the start"."""
    if last_event_id is None or last_event_id == "":
        return 0
    # isascii: int() would also accept other scripts' digits and surrounding whitespace.
    if not (last_event_id.isascii() and last_event_id.isdigit()) or len(last_event_id) > 19:
        raise InvalidInput(f"invalid Last-Event-ID {last_event_id[:64]!r}")
    return int(last_event_id)


class InMemoryBus:
    """Fan-out within one process.

    Args:
        max_events: events kept per run for replay.
        max_bytes: payload bytes kept per run for replay.
        retention_seconds: how long an ended stream stays available to late or resuming clients.
        max_retained_bytes: payload bytes all ended streams may hold together; beyond, the oldest
            ended streams are forgotten before their time.
    """

    def __init__(
        self,
        *,
        max_events: int = 10_000,
        max_bytes: int = 16 * 2**20,
        retention_seconds: float = 300.0,
        max_retained_bytes: int = 64 * 2**20,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.retention_seconds = retention_seconds
        self.max_retained_bytes = max_retained_bytes
        self._streams: dict[str, _Stream] = {}
        self._ended: deque[tuple[float, str]] = deque()
        #: Payload bytes held by the ended streams still in `_streams`.
        self.retained_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._listeners: dict[str, set[asyncio.Queue[str]]] = {}

    @classmethod
    def from_url(cls, url: str) -> InMemoryBus:
        return cls()

    def __repr__(self) -> str:
        return f"<InMemoryBus streams={len(self._streams)} channels={len(self._listeners)}>"

    def _stream(self, run_id: str, *, expire: bool = True) -> _Stream:
        if expire:
            self._expire()
        stream = self._streams.get(run_id)
        if stream is None:
            stream = self._streams[run_id] = _Stream()
        return stream

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.retention_seconds
        while self._ended and (self._ended[0][0] < cutoff or self.retained_bytes > self.max_retained_bytes):
            ended_at, run_id = self._ended.popleft()
            stream = self._streams.get(run_id)
            if stream is not None and stream.ended_at == ended_at:
                # Subscribers still reading it keep their own reference until they are done.
                del self._streams[run_id]
                self.retained_bytes -= stream.bytes

    def _schedule_expiry(self) -> None:
        """Arm the timer for the oldest ended stream's expiry (one timer for the whole bus)."""
        if self._timer is not None or not self._ended:
            return
        delay = max(0.0, self._ended[0][0] + self.retention_seconds - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay + 0.01, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._expire()
        self._schedule_expiry()

    async def publish(self, run_id: str, event: str, data: bytes) -> str:
        stream = self._stream(run_id)
        if stream.ended_at is not None:
            # A worker that lost its run (thread deleted) may still emit; the stream is closed.
            return str(stream.next_seq - 1)
        seq = stream.next_seq
        stream.next_seq += 1
        if len(data) >= _COMPACT_BYTES:
            data = bytes(memoryview(data))
        item = StreamEvent(event, data, str(seq))
        stream.events.append(item)
        stream.bytes += len(data)
        while len(stream.events) > self.max_events or (
            stream.bytes > self.max_bytes and len(stream.events) > 1
        ):
            dropped = stream.events.popleft()
            stream.bytes -= len(dropped.data)
            stream.first_seq += 1
        stream.wake()
        return item.id

    async def enqueue(self, run_id: str, event: str, data: bytes) -> None:
        # In-process appends cost no round trip: nothing to batch.
        await self.publish(run_id, event, data)

    async def flush(self, run_id: str) -> None:
        """Nothing is ever queued."""

    async def end_stream(self, run_id: str) -> None:
        stream = self._stream(run_id)
        if stream.ended_at is None:
            stream.ended_at = time.monotonic()
            self._ended.append((stream.ended_at, run_id))
            self.retained_bytes += stream.bytes
            stream.wake()
            if self.retained_bytes > self.max_retained_bytes:
                self._expire()
            self._schedule_expiry()

    async def latest_event_id(self, run_id: str) -> str | None:
        stream = self._streams.get(run_id)
        if stream is None or stream.next_seq == 1:
            return None
        return str(stream.next_seq - 1)

    async def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        after = parse_event_id(last_event_id)
        # No expiry sweep here: it could drop the very stream the caller just ended.
        stream = self._stream(run_id, expire=False)
        while True:
            while after < stream.next_seq - 1:
                # Events are contiguous from first_seq, so this indexes near the deque's right end for
                # a live subscriber. Trimmed events (over the replay bounds) are skipped, not waited for.
                after = max(after, stream.first_seq - 1)
                item = stream.events[after + 1 - stream.first_seq]
                after += 1
                yield item
            if stream.ended_at is not None:
                return
            await stream.changed.wait()

    async def subscribe_batches(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[list[StreamEvent]]:
        """As `subscribe`, but each item holds every event available at that moment (never none),
        for a writer that sends them in one write."""
        after = parse_event_id(last_event_id)
        stream = self._stream(run_id, expire=False)
        while True:
            if after < stream.next_seq - 1:
                after = max(after, stream.first_seq - 1)
                start = after + 1 - stream.first_seq
                batch = list(itertools.islice(stream.events, start, None))
                after = stream.next_seq - 1
                yield batch
                continue
            if stream.ended_at is not None:
                return
            await stream.changed.wait()

    async def notify(self, channel: str, message: str = "") -> None:
        for queue in self._listeners.get(channel, ()):
            queue.put_nowait(message)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        listeners = self._listeners.setdefault(channel, set())
        listeners.add(queue)

        async def messages() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[channel]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for stream in self._streams.values():
            stream.wake()
