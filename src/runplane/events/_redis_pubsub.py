"""The shared pub/sub connection of a `RedisBus`: one per bus, fanning messages out locally.

Subscribers and listeners attach a callback ("sink") to a channel; the hub keeps the connection
subscribed to exactly the channels that have sinks, reconnects with backoff when it drops, and PINGs
it when idle. Like the bus, it takes no socket timeout on its connection and bounds each write with
`asyncio.timeout` instead (see `runplane.events.redis`, "Cancellation").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from runplane.events._echoes import Echoes

logger = logging.getLogger("runplane.events.redis")


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


class PubSubHub:
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
        #: Hints this process delivered at once (`deliver_locally`), whose copy from Redis is dropped.
        self.echoes = Echoes()

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

    def deliver_locally(self, channel: str, message: str) -> bool:
        """Hand a hint this process publishes on `channel` to the local sinks now (see
        `events._echoes`). True when its copy from Redis is expected (this connection is subscribed
        to the channel) and will be dropped; the caller `echoes.forget`s it if the publish fails."""
        state = self._channels.get(channel)
        if state is None or not state.sinks:
            return False
        for sink in list(state.sinks):
            sink(message)
        if self._conn is None or channel not in self._subscribed or state.pending:
            return False  # the copy may not come: heard twice if it does
        self.echoes.expect(channel, message)
        return True

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
                self.echoes.drop(name)
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
                self.echoes.drop()  # nothing published before comes on the next connection
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
                    if self.echoes.take(name, message):
                        continue  # this process heard it when it sent it
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
