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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from runplane.core.errors import InvalidInput, StoreUnavailable
from runplane.core.events import StreamEvent

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART = 2**64 - 1
#: Entries a subscriber reads per round trip.
_BATCH = 500

# Each script takes the stream key and reports "ended" by the last entry being the sentinel, so the
# check and the append are one atomic step (a late publish can never land after the end).
_PUBLISH = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 2)
if last[1] and last[1][2][1] == 'end' then
  if last[2] then return last[2][1] end
  return '0-0'
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[1], 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], id)
return id
"""

# On a stream that does not exist, the end is marked `guard`: it was written for a run that is over
# in the database by a process that has not seen its events (`RunManager.stream_run`), or Redis lost
# the stream; a publisher that buffered the run's events while Redis was down may still deliver them
# (`_REPLAY` replaces the guard), so a resuming reader gives it a moment.
_END = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] and last[1][2][1] == 'end' then return 0 end
local id
if last[1] then
  id = redis.call('XADD', KEYS[1], '*', 'end', '1')
else
  id = redis.call('XADD', KEYS[1], '*', 'end', '1', 'guard', '1')
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], id)
return 1
"""

# Delivers events buffered while Redis was down (`ResilientBus`), with the end mark when the run ended
# meanwhile. An end sentinel already at the tail was written by a reader's guard for a run that is
# terminal in the database (`RunManager.stream_run`) before these events arrived: the real end is the
# one in this batch, so the guard's is taken off, the events appended, and the end put back.
# ARGV: the end flag, retention seconds, idle TTL seconds, max events, wake channel, then
# event/data pairs.
_REPLAY = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] and last[1][2][1] == 'end' then redis.call('XDEL', KEYS[1], last[1][1]) end
local id = '0-0'
for i = 6, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'event', ARGV[i], 'data', ARGV[i + 1])
end
if ARGV[1] == '1' then
  redis.call('XADD', KEYS[1], '*', 'end', '1')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], id)
return id
"""

# Returns {state, entries}. The state is only computed when nothing follows `after`: 1 when the
# stream ended (so a resume from at or past the sentinel stops instead of waiting forever), 2 when
# the stream does not exist (not started yet, or expired).
_READ = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local state = 0
if #entries == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if not last[1] then state = 2 elseif last[1][2][1] == 'end' then state = 1 end
end
return {state, entries}
"""
_ENDED, _MISSING = 1, 2


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


class _Channel:
    __slots__ = ("internal", "pending", "ready", "sinks")

    def __init__(self, internal: bool) -> None:
        #: Stream wake-up channels get an empty message whenever a subscription is confirmed: after a
        #: reconnect, appends announced while the connection was down were lost, so readers must look.
        self.internal = internal
        self.sinks: set[Callable[[str], None]] = set()
        #: SUBSCRIBE commands sent on the current connection and not confirmed yet.
        self.pending = 0
        self.ready = asyncio.Event()
        self.ready.set()


class _PubSubHub:
    """One pub/sub connection shared by every listener of a bus, fanning messages out locally.

    Channels are subscribed while they have local sinks; `_reconcile` brings the server's set in
    line with the wanted set, so the order in which listeners come and go cannot leave the
    connection subscribed to the wrong set. A listener is confirmed once every SUBSCRIBE for its
    channel sent on this connection has been acknowledged: counting them makes a quick
    unsubscribe/subscribe sequence wait for the last one.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        confirm_timeout: float,
        health_check_seconds: float,
        command_timeout: float,
    ) -> None:
        self._pool = pool
        self._confirm_timeout = confirm_timeout
        self._health_check_seconds = health_check_seconds
        #: Bounds connecting and each write: the connection has no socket timeout (see module doc).
        self._command_timeout = command_timeout
        self._channels: dict[str, _Channel] = {}
        self._subscribed: set[str] = set()
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._attempted = asyncio.Event()
        self._reconcile_task: asyncio.Task[None] | None = None
        self._dirty = False

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def channel_count(self) -> int:
        return sum(1 for channel in self._channels.values() if channel.sinks)

    @asynccontextmanager
    async def attach(
        self, channel: str, sink: Callable[[str], None], *, internal: bool = False
    ) -> AsyncIterator[None]:
        """Deliver `channel`'s messages to `sink` inside the context; subscribed on entry."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="runplane-redis-pubsub")
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel(internal)
        state.sinks.add(sink)
        try:
            try:
                async with asyncio.timeout(self._confirm_timeout):
                    await self._attempted.wait()
                    await self._reconcile()
                    await state.ready.wait()
            except TimeoutError:
                # Redis is unreachable: listen unconfirmed; the caller's fallback covers the gap.
                logger.warning(
                    "redis pub/sub subscription to %s not confirmed within %.1fs",
                    channel,
                    self._confirm_timeout,
                    extra={"action": "bus_listen"},
                )
            yield
        finally:
            state.sinks.discard(sink)
            self._forget_if_unused(channel)  # never subscribed (Redis down): nothing to undo
            if channel in self._channels and not state.sinks:
                self._reconcile_soon()

    def _reconcile_soon(self) -> None:
        # Unsubscribing happens in a task rather than inline, so that leaving a listener is
        # synchronous (it runs in `finally` blocks of cancelled tasks). A request arriving while a
        # pass is under way (which may have looked at the channels already) makes it go again.
        self._dirty = True
        if self._task is not None and (self._reconcile_task is None or self._reconcile_task.done()):
            self._reconcile_task = asyncio.create_task(self._reconcile_while_dirty())

    async def _reconcile_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            await self._reconcile()

    async def _reconcile(self) -> None:
        async with self._lock:
            conn = self._conn
            if conn is None:
                return
            wanted = {name for name, state in self._channels.items() if state.sinks}
            to_unsubscribe = self._subscribed - wanted
            to_subscribe = wanted - self._subscribed
            try:
                if to_unsubscribe:
                    await self._send(conn, "UNSUBSCRIBE", *to_unsubscribe)
                if to_subscribe:
                    for name in to_subscribe:
                        state = self._channels[name]
                        state.pending += 1
                        state.ready.clear()
                    await self._send(conn, "SUBSCRIBE", *to_subscribe)
            except (RedisError, OSError) as exc:  # OSError includes our TimeoutError
                # The reader sees the broken connection too, and resubscribes everything on reconnect.
                logger.warning("redis pub/sub command failed: %s", exc, extra={"action": "bus_listen"})
                return
            if self._conn is not conn:
                return
            self._subscribed -= to_unsubscribe
            self._subscribed |= to_subscribe
            for name in to_unsubscribe:
                self._forget_if_unused(name)

    def _forget_if_unused(self, name: str) -> None:
        state = self._channels.get(name)
        if state is not None and not state.sinks and not state.pending and name not in self._subscribed:
            del self._channels[name]

    async def _run(self) -> None:
        delay = 0.05
        while True:
            # Not taken from the pool: it never returns there, and must not count against its bound.
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
            try:
                # The handshake's reads have no socket timeout either (see module doc).
                async with asyncio.timeout(self._command_timeout):
                    await conn.connect()  # type: ignore[no-untyped-call]
            except Exception as exc:  # not only RedisError: a dead dispatcher would deafen every listener
                logger.warning(
                    "redis pub/sub connect failed (retrying in %.2fs): %s",
                    delay,
                    exc,
                    extra={"action": "bus_connect"},
                )
                self._attempted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            async with self._lock:
                self._conn = conn
                self._subscribed = set()
            self._attempted.set()
            try:
                await self._reconcile()
                delay = 0.05
                await self._read(conn)
            except (RedisError, OSError) as exc:
                logger.warning("redis pub/sub connection lost: %s", exc, extra={"action": "bus_connect"})
            except Exception:
                # Never let a surprise end the dispatcher: every listener of the process would go deaf.
                logger.exception("redis pub/sub dispatcher failed", extra={"action": "bus_connect"})
            finally:
                self._conn = None
                self._subscribed = set()
                for name, state in list(self._channels.items()):
                    state.pending = 0
                    state.ready.set()  # nobody waits for a confirmation that cannot come
                    self._forget_if_unused(name)
                with contextlib.suppress(RedisError, OSError):
                    await conn.disconnect(nowait=True)
            await asyncio.sleep(delay)

    async def _read(self, conn: AbstractConnection) -> None:
        ping_sent = False
        while True:
            # An explicit timeout returns None instead of raising: time for a health check, so that
            # a silently dead TCP connection is noticed and replaced.
            # push_request: under RESP3 (redis-py 8's default) pub/sub traffic arrives as push frames.
            response: Any = await conn.read_response(
                timeout=self._health_check_seconds, disconnect_on_error=False, push_request=True
            )
            if response is None:
                if ping_sent:
                    raise ConnectionError("redis pub/sub connection did not answer PING")
                await self._send(conn, "PING")
                ping_sent = True
                continue
            ping_sent = False
            if not isinstance(response, list) or len(response) < 2:
                continue  # PONG outside subscribed mode
            kind = bytes(response[0])
            name = bytes(response[1]).decode()
            if kind == b"message" and len(response) == 3:
                state = self._channels.get(name)
                if state is not None:
                    message = bytes(response[2]).decode(errors="replace")
                    for sink in list(state.sinks):
                        sink(message)
            elif kind == b"subscribe":
                state = self._channels.get(name)
                if state is not None and state.pending:
                    state.pending -= 1
                    if not state.pending:
                        state.ready.set()
                        if state.internal:
                            for sink in list(state.sinks):
                                sink("")
                        self._forget_if_unused(name)

    async def _send(self, conn: AbstractConnection, *args: str) -> None:
        # A write blocks only while the server does not read; a timeout here (a TimeoutError, so an
        # OSError) is a dead connection to replace, as a socket timeout was.
        async with asyncio.timeout(self._command_timeout):
            await conn.send_command(*args, check_health=False)

    async def close(self) -> None:
        for task in (self._reconcile_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._reconcile_task = None


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
        self._hub = _PubSubHub(
            redis.connection_pool,
            confirm_timeout=confirm_timeout,
            health_check_seconds=health_check_seconds,
            command_timeout=command_timeout,
        )
        self._publish_script = redis.register_script(_PUBLISH)
        self._end_script = redis.register_script(_END)
        self._read_script = redis.register_script(_READ)
        self._replay_script = redis.register_script(_REPLAY)
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
        """Events after `last_event_id`, then live ones until the end sentinel.

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
                    guarded = False
                    for entry_id, fields in entries:
                        if "event" not in fields:  # the end sentinel
                            if "guard" in fields and after != "0-0" and not missing_once:
                                guarded = missing_once = True  # see `_END`: wait once for a replay
                                break
                            return
                        after = entry_id
                        yield StreamEvent(fields["event"].decode(), fields.get("data", b""), entry_id)
                    if len(entries) == _BATCH and not guarded:
                        continue
                    if state == _ENDED and not guarded:
                        return
                    if state == _MISSING and after != "0-0":
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
        (see `_REPLAY`).

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
        try:
            await self._command(self._redis.publish(self._hint_channel(channel), message))
        except StoreUnavailable as exc:
            logger.warning(
                "dropped hint on %s: %s", channel, exc, extra={"action": "bus_notify", "channel": channel}
            )

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
