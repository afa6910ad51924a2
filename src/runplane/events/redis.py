"""`RedisBus`: run streams and hints shared by every process that points at one Redis.

Layout, for a bus with prefix `P`:

- `P:stream:{run_id}` is a Redis Stream holding the run's events (fields `event`, `data`). Its ids
  (`ms-seq`) are the SSE ids: Redis makes them strictly increasing per stream even within one
  millisecond. `end_stream` appends a sentinel entry (field `end`, never yielded) and sets the
  retention EXPIRE; every publish refreshes a longer idle EXPIRE so that abandoned streams die.
  Trimming is `MAXLEN ~ max_events`, which keeps at least `max_events` entries (unlike
  `InMemoryBus` there is no byte bound). Checking for the sentinel and appending is one Lua script,
  so a publish racing `end_stream` is either before the end or dropped.
- `P:wake:{run_id}` is a pub/sub channel on which each append is announced (in the same script).
  Subscribers do not hold a blocking XREAD each: they listen on the wake channel through the bus's
  one shared pub/sub connection, then XRANGE on the command pool when woken (and every
  `poll_seconds` anyway). So a process with hundreds of SSE clients and joiners holds one pub/sub
  connection plus a bounded pool, and a client that goes away releases nothing but a local
  callback: there is no blocked connection to tear down. Wake-ups announced while the pub/sub
  connection was down are lost, so every confirmed (re)subscription also wakes its readers.
- `P:hint:{channel}` carries `notify`/`listen` hints over the same shared pub/sub connection.

Failure policy: Redis holds nothing that must survive, and every hint has a store-reading fallback.
`notify` logs and swallows Redis errors (hints are best effort); `listen` never fails for Redis
reasons either (while Redis is down it waits `confirm_timeout` at most, then listens unconfirmed
and starts receiving again once the pub/sub connection is back, which it retries with backoff).
`publish`, `end_stream` and reading a stream raise `StoreUnavailable`, because a lost event cannot
be recovered later; a client resumes from its Last-Event-ID.

Cancellation: a task cancelled in the middle of a bus call must end cancelled. redis-py sends every
command inside `asyncio.wait_for` when its connections have a socket timeout, and on Python 3.11
`wait_for` drops a cancellation that arrives while the write completes (CPython gh-86296, fixed in
3.12): the cancelled caller carries on as if nothing happened (a cancelled subscriber goes back to
waiting for events). So the bus takes the socket timeout off its pool's connections and bounds each
call itself with `asyncio.timeout` (`command_timeout`), which propagates cancellation correctly.

Needs Redis >= 6.2 (exclusive XRANGE bounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from runplane.core.errors import InvalidInput, StoreUnavailable
from runplane.core.events import StreamEvent
from runplane.events import _redis_scripts as scripts
from runplane.events._redis_pubsub import PubSubHub
from runplane.events.batching import Hint, StreamBatch

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1
#: Entries a subscriber reads per round trip.
_BATCH = 500


def parse_stream_id(last_event_id: str | None) -> tuple[int, int]:
    """A Redis stream id as `(ms, seq)`; `(0, 0)` means "from the start".

    Only Redis ids (`123-4`) are accepted: a plain integer (an `InMemoryBus` id) would silently mean
    "after millisecond N" here, which is never what the client meant.

    Raises:
        InvalidInput: anything else.
    """
    if last_event_id is None or last_event_id == "":
        return (0, 0)
    match = _ID.fullmatch(last_event_id)
    if match is not None:
        ms, seq = int(match[1]), int(match[2])
        # The very last id has no successor, so an exclusive range from it is not expressible.
        if ms <= _MAX_PART and seq <= _MAX_PART and (ms, seq) != (_MAX_PART, _MAX_PART):
            return (ms, seq)
    raise InvalidInput(f"invalid Last-Event-ID {last_event_id[:64]!r}")


class RedisBus:
    """Run streams and hints over Redis, shared by API servers and workers.

    Args:
        redis: the client for commands; its pool should be bounded (`from_url` makes one).
        prefix: namespace of every key and channel, so several deployments can share a Redis.
        max_events: events kept per run for replay (approximate trimming keeps at least this many).
        retention_seconds: how long an ended stream stays available to late or resuming clients.
        idle_ttl_seconds: a stream nobody publishes to for this long is dropped even if never ended
            (its worker died); refreshed by every publish.
        poll_seconds: how often a waiting subscriber re-reads its stream without a wake-up.
        confirm_timeout: how long `listen`/`subscribe` wait for Redis to confirm a subscription.
        health_check_seconds: idle time after which the pub/sub connection is PINGed.
        command_timeout: bound of one Redis call (waiting for a pooled connection included), after
            which it fails with `StoreUnavailable`. Default: the socket timeout the client's pool
            was configured with, else 10 s. The bus takes that socket timeout off the pool (see the
            module doc), so give it a client whose pool has not opened connections yet.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "runplane",
        max_events: int = 10_000,
        retention_seconds: float = 300.0,
        idle_ttl_seconds: float = 86_400.0,
        poll_seconds: float = 5.0,
        confirm_timeout: float = 5.0,
        health_check_seconds: float = 30.0,
        command_timeout: float | None = None,
    ) -> None:
        if max_events < 1:
            raise InvalidInput("max_events must be at least 1")
        socket_timeout = _take_socket_timeout(redis.connection_pool)
        if command_timeout is None:
            command_timeout = socket_timeout if socket_timeout is not None else 10.0
        self.command_timeout = command_timeout
        self.prefix = prefix
        self.max_events = max_events
        self.retention_seconds = retention_seconds
        self.idle_ttl_seconds = max(idle_ttl_seconds, retention_seconds)
        self.poll_seconds = poll_seconds
        self._redis = redis
        self._closed = False
        self._hub = PubSubHub(
            redis.connection_pool,
            confirm_timeout=confirm_timeout,
            health_check_seconds=health_check_seconds,
            command_timeout=command_timeout,
        )
        self._publish_script = redis.register_script(scripts.PUBLISH)
        self._end_script = redis.register_script(scripts.END)
        self._read_script = redis.register_script(scripts.READ)
        self._replay_script = redis.register_script(scripts.REPLAY)
        self._publish_many_script = redis.register_script(scripts.PUBLISH_MANY)
        self._wakers: set[asyncio.Event] = set()

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 32, client_name: str | None = None, **options: Any
    ) -> RedisBus:
        """A bus on `redis://[user:password@]host:port/db` (or `rediss://`).

        Args:
            url: the Redis URL; its query options (e.g. `socket_timeout`) win over the defaults.
            max_connections: bound of the command pool (the pub/sub connection comes on top).
                Callers beyond it wait for a free connection rather than opening more.
            client_name: the CLIENT SETNAME of every connection (default `runplane-bus-<random>`),
                to find this bus's connections in CLIENT LIST.
            options: `RedisBus` keyword arguments.
        """
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=30,
            socket_connect_timeout=5.0,
            # Taken off the connections again by `__init__`, as the default `command_timeout`.
            socket_timeout=10.0,
            socket_keepalive=True,
            client_name=client_name or f"runplane-bus-{uuid.uuid4().hex[:12]}",
            # A pooled connection may be stale after a Redis restart: one quick retry hides that.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        )
        return cls(Redis.from_pool(pool), **options)

    def __repr__(self) -> str:
        return (
            f"<RedisBus prefix={self.prefix!r} channels={self._hub.channel_count()} "
            f"connected={self._hub.connected}>"
        )

    def _key(self, run_id: str) -> str:
        return f"{self.prefix}:stream:{run_id}"

    def _wake_channel(self, run_id: str) -> str:
        return f"{self.prefix}:wake:{run_id}"

    def _hint_channel(self, channel: str) -> str:
        return f"{self.prefix}:hint:{channel}"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the event bus is closed")

    async def publish(self, run_id: str, event: str, data: bytes) -> str:
        """Append an event; a publish after `end_stream` is dropped (returns the last event's id).

        Raises:
            StoreUnavailable: Redis failed.
        """
        self._check_open()
        result = await self._command(
            self._publish_script(
                keys=[self._key(run_id)],
                args=[
                    event,
                    data,
                    self.max_events,
                    _seconds(self.idle_ttl_seconds),
                    self._wake_channel(run_id),
                ],
            )
        )
        return bytes(result).decode()

    async def enqueue(self, run_id: str, event: str, data: bytes) -> None:
        """`publish` (this bus writes at once; `ResilientBus` batches with `publish_many`)."""
        await self.publish(run_id, event, data)

    async def flush(self, run_id: str) -> None:
        """Nothing is queued here."""

    async def publish_many(self, batches: Sequence[StreamBatch], hints: Sequence[Hint] = ()) -> None:
        """Append several runs' events and end marks, then send `hints` (from `hint_here`), in one
        round trip: one `PUBLISH_MANY` script call, atomic; a run's events after its stream ended
        are dropped.

        Raises:
            StoreUnavailable: Redis failed.
        """
        self._check_open()
        if not batches and not hints:
            return
        keys: list[str] = []
        args: list[Any] = [
            self.max_events,
            _seconds(self.idle_ttl_seconds),
            _seconds(self.retention_seconds),
            len(hints),
        ]
        for hint in hints:
            args += [hint.channel, hint.message]
        for batch in batches:
            keys.append(self._key(batch.run_id))
            args += [self._wake_channel(batch.run_id), "1" if batch.end else "0", len(batch.events)]
            for event, data in batch.events:
                args += [event, data]
        await self._command(self._publish_many_script(keys=keys, args=args))

    async def end_stream(self, run_id: str) -> None:
        """Append the end sentinel (idempotent) and let the stream expire after retention.

        Raises:
            StoreUnavailable: Redis failed.
        """
        self._check_open()
        await self._command(
            self._end_script(
                keys=[self._key(run_id)],
                args=[_seconds(self.retention_seconds), self._wake_channel(run_id)],
            )
        )

    async def latest_event_id(self, run_id: str) -> str | None:
        """The id of the stream's newest event (the end sentinel is not an event), None when none.

        Raises:
            StoreUnavailable: Redis failed.
        """
        self._check_open()
        newest = await self._command(self._redis.xrevrange(self._key(run_id), "+", "-", count=2))
        for entry_id, fields in newest or ():
            if fields and b"event" in fields and entry_id is not None:
                return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return None

    async def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        """Events after `last_event_id`, then live ones until the end sentinel (see
        `subscribe_batches`)."""
        async with contextlib.aclosing(self.subscribe_batches(run_id, last_event_id)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def subscribe_batches(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """Events after `last_event_id`, then live ones until the end sentinel, as they are read:
        each item holds every event one read returned (never none).

        A stream that does not exist is waited for when reading from the start (its run has not
        published yet), but ends the iteration when resuming or once read from: it expired.

        Raises:
            InvalidInput: `last_event_id` is not a Redis stream id (before anything is yielded).
            StoreUnavailable: Redis failed, or the bus was closed.
        """
        ms, seq = parse_stream_id(last_event_id)
        after = f"{ms}-{seq}"
        self._check_open()
        key = self._key(run_id)
        changed = asyncio.Event()
        self._wakers.add(changed)

        def wake(_message: str) -> None:
            changed.set()

        missing_once = False
        try:
            # Subscribed before the first read: an append after that read always wakes us.
            async with self._hub.attach(self._wake_channel(run_id), wake, internal=True):
                while True:
                    changed.clear()
                    state, entries = await self._read(key, after)
                    guarded = ended = False
                    batch = []
                    for entry_id, fields in entries:
                        if "event" not in fields:  # the end sentinel
                            if "guard" in fields and after != "0-0" and not missing_once:
                                guarded = missing_once = True  # see `scripts.END`: wait once for a replay
                            else:
                                ended = True
                            break
                        after = entry_id
                        batch.append(StreamEvent(fields["event"].decode(), fields.get("data", b""), entry_id))
                    if batch:
                        yield batch
                    if ended:
                        return
                    if len(entries) == _BATCH and not guarded:
                        continue
                    if state == scripts.ENDED and not guarded:
                        return
                    if state == scripts.MISSING and after != "0-0":
                        # A stream that existed (we read from it, or the client resumes from it)
                        # and is gone has expired after its end, or after its worker vanished;
                        # or Redis restarted empty, and the publishers are about to deliver what
                        # they buffered meanwhile (`ResilientBus`). So it is given one more poll
                        # period (or a wake-up) to reappear before it counts as expired.
                        if missing_once:
                            return
                        missing_once = True
                    elif not guarded:
                        missing_once = False
                    # A short batch without the sentinel: we saw everything up to the read.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await changed.wait()
                    self._check_open()
        finally:
            self._wakers.discard(changed)

    async def _read(self, key: str, after: str) -> tuple[int, list[tuple[str, dict[str, bytes]]]]:
        self._check_open()
        state, raw = await self._command(self._read_script(keys=[key], args=[f"({after}", _BATCH]))
        entries = []
        for entry_id, flat in raw:
            fields = {bytes(flat[i]).decode(): bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
            entries.append((bytes(entry_id).decode(), fields))
        return int(state), entries

    async def _command(self, call: Awaitable[_T]) -> _T:
        """Await a Redis call within `command_timeout`.

        Raises:
            StoreUnavailable: Redis failed or did not answer in time.
        """
        try:
            async with asyncio.timeout(self.command_timeout):
                return await call
        except TimeoutError as exc:
            raise StoreUnavailable(
                f"event bus unavailable: Redis did not answer within {self.command_timeout:g}s"
            ) from exc
        except RedisError as exc:
            # redis-py's message names the host: it stays in the cause, for the server's log.
            raise StoreUnavailable(f"event bus unavailable: {type(exc).__name__}") from exc

    async def replay(self, run_id: str, events: list[tuple[str, bytes]], *, end: bool) -> None:
        """Deliver events held back while Redis was down, in one step, then the end mark if `end`
        (see `scripts.REPLAY`).

        Raises:
            StoreUnavailable: Redis failed (nothing was delivered).
        """
        self._check_open()
        args: list[Any] = [
            "1" if end else "0",
            _seconds(self.retention_seconds),
            _seconds(self.idle_ttl_seconds),
            self.max_events,
            self._wake_channel(run_id),
        ]
        for event, data in events:
            args += [event, data]
        await self._command(self._replay_script(keys=[self._key(run_id)], args=args))

    async def ping(self) -> None:
        """Return once Redis answers a PING (readiness).

        Raises:
            StoreUnavailable: it did not.
        """
        self._check_open()
        await self._command(self._redis.ping())

    async def notify(self, channel: str, message: str = "") -> None:
        """Publish a hint; Redis errors are logged and swallowed (every listener has a fallback)."""
        if self._closed:
            return
        hint = self.hint_here(channel, message)
        try:
            await self._command(self._redis.publish(hint.channel, message))
        except StoreUnavailable as exc:
            self.hint_lost(hint)
            logger.warning(
                "dropped hint on %s: %s", channel, exc, extra={"action": "bus_notify", "channel": channel}
            )

    def hint_here(self, channel: str, message: str) -> Hint:
        """This process's listeners hear the hint now; other processes' by way of Redis, from
        `notify` or `publish_many` (see `batching.SupportsBatchedHints`)."""
        hint_channel = self._hint_channel(channel)
        return Hint(hint_channel, message, echo=self._hub.deliver_locally(hint_channel, message))

    def hint_lost(self, hint: Hint) -> None:
        """The hint was not published: its copy from Redis is not coming."""
        if hint.echo:
            self._hub.echoes.forget(hint.channel, hint.message)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        """Hints on `channel`; the subscription is confirmed by Redis when the context is entered
        (unless Redis is unreachable: then it is retried in the background, see the module doc)."""
        self._check_open()
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def messages() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        async with self._hub.attach(self._hint_channel(channel), queue.put_nowait):
            yield messages()

    async def close(self) -> None:
        """Stop the pub/sub connection and close the pool; waiting subscribers raise
        `StoreUnavailable`, listeners just stop receiving."""
        if self._closed:
            return
        self._closed = True
        for changed in list(self._wakers):
            changed.set()
        await self._hub.close()
        await self._redis.aclose()


def _take_socket_timeout(pool: ConnectionPool) -> float | None:
    """Remove the socket timeout from the connections `pool` makes from now on, and return it.

    Without one, redis-py writes commands directly instead of inside `asyncio.wait_for` (see the
    module doc); the bus bounds its calls itself.
    """
    kwargs = pool.connection_kwargs
    timeout: float | None = kwargs.get("socket_timeout")
    # Explicitly None: when absent, redis-py (>= 8) applies a default socket timeout of its own.
    kwargs["socket_timeout"] = None
    kwargs.pop("orig_socket_timeout", None)  # the value a connection restores after maintenance
    if kwargs.get("socket_connect_timeout", 0) is None:
        kwargs["socket_connect_timeout"] = timeout  # what redis-py derived from the socket timeout
    return timeout


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))
