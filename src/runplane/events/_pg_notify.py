"""The LISTEN side of `PostgresBus`: one connection per bus, fanning notifications out locally.

The bus uses a single PostgreSQL channel, so the connection issues exactly one `LISTEN`, once per
(re)connection, however many streams and hint channels the process follows; what a notification is
about travels in its payload (see `wake_payload`, `hint_payload`, `barrier_payload`). Joining or
leaving is a local dictionary update, so hundreds of concurrent joins cost no round trip to the
server for the subscription itself.

Two guarantees, built on PostgreSQL delivering notifications in commit order:

- A stream subscriber only needs "everything committed after I registered reaches me": it registers
  its callback, then waits until the connection is listening (at once, normally).
- A hint listener must in addition not receive hints committed *before* it registered (which may
  still be on their way to this process). Its callback starts inactive; the hub then sends a
  barrier notification through the bus's pool and activates the callback when the barrier comes
  back, in dispatch order: everything after the barrier was committed after the registration.
  Listeners entering together share one barrier. A (re)connection activates every callback
  registered before its `LISTEN`, since that connection only delivers later commits.

Notifications committed while the connection is down are lost. After a reconnection every stream
subscriber is woken to re-read its stream; hints have store-reading fallbacks. When the connection
has been idle for `health_check_seconds`, a barrier doubles as a ping: if it does not come back within
`confirm_timeout` of being sent, the connection is presumed dead and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql

from runplane.events._echoes import Echoes

logger = logging.getLogger(__name__)

#: PostgreSQL refuses a payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7999
#: Seconds a (re)connection attempt may take.
_CONNECT_TIMEOUT = 10.0


def wake_payload(run_id: str) -> str:
    """Payload announcing a change in `run_id`'s stream."""
    return "w" + run_id


def hint_payload(channel: str, message: str) -> str:
    """Payload carrying a hint; the channel is length-prefixed, so any string is unambiguous."""
    return f"h{len(channel)}:{channel}{message}"


def barrier_payload(token: str) -> str:
    return "b" + token


def payload_fits(payload: str) -> bool:
    return len(payload.encode()) <= MAX_PAYLOAD_BYTES


class _Sink:
    __slots__ = ("active", "callback")

    def __init__(self, callback: Callable[[str], None], *, active: bool) -> None:
        self.callback = callback
        #: Inactive sinks drop messages: they may have been committed before the registration.
        self.active = active


class _Round:
    """Sinks waiting for one barrier (or a ping, with no sinks)."""

    __slots__ = ("done", "failed", "sent_at", "sinks")

    def __init__(self) -> None:
        self.sinks: list[_Sink] = []
        self.done = asyncio.Event()
        self.sent_at: float | None = None
        #: The barrier could not be sent: its waiters time out and go on unconfirmed.
        self.failed = False

    def finish(self) -> None:
        for sink in self.sinks:
            sink.active = True
        self.done.set()


class NotifyHub:
    """One LISTEN connection shared by every subscriber and listener of a bus.

    Args:
        conninfo: where to connect.
        channel: the PostgreSQL channel (the bus sends everything there).
        send: sends a payload on `channel` through the bus's pool (used for barriers).
        connect_kwargs: extra `psycopg.AsyncConnection.connect` arguments.
        confirm_timeout: how long an entry waits for its confirmation before going on unconfirmed.
        health_check_seconds: idle time after which the connection is pinged.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str,
        send: Callable[[str], Awaitable[None]],
        *,
        connect_kwargs: dict[str, Any],
        confirm_timeout: float,
        health_check_seconds: float,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._send = send
        self._connect_kwargs = connect_kwargs
        self._confirm_timeout = confirm_timeout
        self._health_check_seconds = health_check_seconds
        self._wakes: dict[str, set[_Sink]] = {}
        self._hints: dict[str, set[_Sink]] = {}
        #: Set while the current connection is listening.
        self._listening = asyncio.Event()
        #: The round new hint listeners join; sent (and replaced) by a `_send_round` task.
        self._collecting: _Round | None = None
        #: Rounds whose barrier was sent (or that wait for the next LISTEN), by token.
        self._sent: dict[str, _Round] = {}
        self._task: asyncio.Task[None] | None = None
        self._helpers: set[asyncio.Task[None]] = set()
        self._last_seen = time.monotonic()
        #: Hints this process delivered at once (`deliver_locally`), whose notification is dropped.
        self.echoes = Echoes()
        #: Completed (re)connections and returned barriers (pings included), for tests and `repr`.
        self.connections = 0
        self.barriers = 0

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    def channel_count(self) -> int:
        return len(self._wakes) + len(self._hints)

    # -- entering and leaving -------------------------------------------------------------------

    @asynccontextmanager
    async def wakes(self, run_id: str, callback: Callable[[str], None]) -> AsyncIterator[None]:
        """Call `callback` on every change of `run_id`'s stream committed after entry."""
        async with self._attach(self._wakes, run_id, callback, exact=False):
            yield

    @asynccontextmanager
    async def hints(self, channel: str, callback: Callable[[str], None]) -> AsyncIterator[None]:
        """Call `callback` with each hint on `channel` committed after entry, and no earlier one."""
        async with self._attach(self._hints, channel, callback, exact=True):
            yield

    @asynccontextmanager
    async def _attach(
        self, table: dict[str, set[_Sink]], key: str, callback: Callable[[str], None], *, exact: bool
    ) -> AsyncIterator[None]:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="runplane-pg-listen")
        sink = _Sink(callback, active=not exact)
        table.setdefault(key, set()).add(sink)
        try:
            try:
                async with asyncio.timeout(self._confirm_timeout):
                    if exact:
                        await self._join_round(sink)
                    else:
                        await self._listening.wait()
            except TimeoutError:
                # PostgreSQL is unreachable (or slow): go on unconfirmed; the caller has a fallback.
                sink.active = True
                logger.warning(
                    "LISTEN for %s not confirmed within %.1fs",
                    key,
                    self._confirm_timeout,
                    extra={"action": "bus_listen"},
                )
            yield
        finally:
            sinks = table.get(key)
            if sinks is not None:
                sinks.discard(sink)
                if not sinks:
                    del table[key]
                    if exact:
                        self.echoes.drop(key)

    def deliver_locally(self, channel: str, message: str) -> bool:
        """Hand a hint this process sends on `channel` to the local listeners now (see
        `events._echoes`): every one registered so far, since the hint is sent after their
        registration. True when its notification is expected back on this connection and will be
        dropped; the caller `echoes.forget`s it if the send fails."""
        sinks = self._hints.get(channel)
        if not sinks:
            return False
        for sink in list(sinks):
            sink.callback(message)
        if not self._listening.is_set():
            return False  # the notification may not come: heard twice if it does
        self.echoes.expect(channel, message)
        return True

    async def _join_round(self, sink: _Sink) -> None:
        round_ = self._collecting
        if round_ is None:
            round_ = self._collecting = _Round()
            self._spawn(self._send_round())
        round_.sinks.append(sink)
        await round_.done.wait()

    async def _send_round(self) -> None:
        await self._listening.wait()
        # Taken just before sending: every sink in it registered before the barrier's commit. Later
        # arrivals start a new round. (A reconnection may have finished the round meanwhile.)
        round_, self._collecting = self._collecting, None
        if round_ is None or round_.done.is_set():
            return
        await self._send_barrier(round_)

    async def _send_barrier(self, round_: _Round) -> None:
        token = uuid.uuid4().hex
        self._sent[token] = round_
        try:
            await self._send(barrier_payload(token))
        except Exception as exc:
            # The waiters time out and go on unconfirmed; a ping is simply not counted.
            self._sent.pop(token, None)
            round_.failed = True
            logger.warning("could not send a barrier: %s", exc, extra={"action": "bus_listen"})
            return
        round_.sent_at = time.monotonic()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helpers.discard)

    # -- the connection -------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.05
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, **self._connect_kwargs
                    )
                # Whatever registered before this LISTEN can only be sent later commits on it. Later
                # arrivals must start a new round; the current one is parked with the sent ones, so
                # that a failed LISTEN leaves it to the next connection.
                if self._collecting is not None:
                    self._sent[uuid.uuid4().hex] = self._collecting
                    self._collecting = None
                waiting = list(self._sent.values())
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self._on_listening(waiting)
                delay = 0.05
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, TimeoutError) as exc:
                logger.warning(
                    "PostgreSQL LISTEN connection failed (retrying in %.2fs): %s",
                    delay,
                    exc,
                    extra={"action": "bus_connect"},
                )
            except Exception:
                # Never let a surprise end the dispatcher: every listener of the process would go deaf.
                logger.exception("PostgreSQL LISTEN dispatcher failed", extra={"action": "bus_connect"})
            finally:
                self._listening.clear()
                self.echoes.drop()  # nothing sent before comes on the next connection
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_listening(self, waiting: list[_Round]) -> None:
        self.connections += 1
        self._last_seen = time.monotonic()
        for round_ in waiting:
            round_.finish()
        self._sent = {token: round_ for token, round_ in self._sent.items() if not round_.done.is_set()}
        self._listening.set()
        if self.connections > 1:
            # Changes announced while we were away are lost: every subscriber must look again.
            for sinks in list(self._wakes.values()):
                for sink in list(sinks):
                    sink.callback("")
            logger.info("PostgreSQL LISTEN connection restored", extra={"action": "bus_connect"})

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        ping: _Round | None = None
        while True:
            timeout = self._health_check_seconds
            if ping is not None:
                timeout = min(timeout, self._confirm_timeout)
            # `notifies` stops after `timeout` in total. Nothing else runs on this connection, so
            # notifications arriving between two calls wait in libpq's buffer.
            async for notify in conn.notifies(timeout=timeout):
                if notify.channel == self._channel:
                    self._dispatch(notify.payload)
            now = time.monotonic()
            if ping is not None:
                if ping.done.is_set() or ping.failed:
                    ping = None
                elif ping.sent_at is not None and now - ping.sent_at > self._confirm_timeout:
                    raise psycopg.OperationalError("the LISTEN connection did not deliver a ping")
            if ping is None and now - self._last_seen >= self._health_check_seconds:
                ping = _Round()
                self._spawn(self._send_barrier(ping))

    def _dispatch(self, payload: str) -> None:
        self._last_seen = time.monotonic()
        kind, body = payload[:1], payload[1:]
        if kind == "w":
            for sink in list(self._wakes.get(body, ())):
                sink.callback("")
        elif kind == "h":
            size, _, rest = body.partition(":")
            if not size.isdigit():
                return
            channel, message = rest[: int(size)], rest[int(size) :]
            if self.echoes.take(channel, message):
                return  # this process heard it when it sent it
            for sink in list(self._hints.get(channel, ())):
                if sink.active:
                    sink.callback(message)
        elif kind == "b":
            # Other processes' barriers pass by too: only ours are in `_sent`.
            round_ = self._sent.pop(body, None)
            if round_ is not None:
                self.barriers += 1
                round_.finish()

    async def close(self) -> None:
        tasks = [*self._helpers, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._listening.clear()
