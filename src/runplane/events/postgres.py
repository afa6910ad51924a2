"""`PostgresBus`: run streams and hints shared through the PostgreSQL database of the store.

A deployment on PostgreSQL alone (no Redis) runs several API and worker processes against one
database; this bus lets them share run output streams and hints.

- Streams live in two tables created by the store's migration `0002_events.sql` (so
  `runplane migrate`, or opening the store, must have run first). `run_streams` holds one row per
  run with its last sequence number and the end marker (`ended_at`); `run_events` holds the
  events, keyed by `(run_id, seq)`. A publish is one statement: bump `last_seq` with an upsert that
  does nothing once the stream ended (so a publish racing `end_stream` is either before the end or
  dropped), insert the event, and `pg_notify` a wake-up. The row lock taken by the upsert is held
  until commit, so per-run ids are dense, strictly increasing, and committed in order: a reader never
  sees event N+1 without event N. The SSE id is `seq` as a decimal string.
- Subscribers read with `seq > last` from one snapshot that also tells whether the stream ended,
  then wait for a wake-up (or `poll_seconds`, the fallback) and read again. They hold a pooled
  connection only for the read itself, never while waiting.
- Wake-ups and hints travel as notifications on ONE PostgreSQL channel (`channel`), routed by
  payload, through one LISTEN connection per bus (see `_pg_notify`). Payloads must stay under 8000
  bytes: hints are short, and run ids are checked.
- Retention: every `trim_every` publishes of a run delete its events beyond `max_events` (so a run
  keeps between `max_events` and `max_events + trim_every - 1` of them; there is no byte bound). At
  most every `cleanup_seconds`, a publish or end starts a background sweep deleting streams that
  ended `retention_seconds` ago or were not written for `idle_ttl_seconds` (their worker died).
  Times are the database server's, shared by every process.
- By default the bus's sessions use `synchronous_commit = off`: a publish does not wait for its WAL
  flush, which multiplies throughput on real disks. A server crash can then lose the last fraction
  of a second of events (never corrupt anything); the store's own writes are unaffected. Pass
  `synchronous_commit=True` to wait for the flush.

Failure policy (as `RedisBus`): `notify` logs and swallows database errors; `listen` never fails for
database reasons (unconfirmed after `confirm_timeout`, see `_pg_notify`); `publish`, `end_stream`
and reading a stream raise `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool

from runplane.core.errors import InvalidInput, StoreUnavailable
from runplane.core.events import StreamEvent
from runplane.db.postgres import GuardedPool, breaker_for, closed_by_server, parse_url
from runplane.db.sql import load_queries
from runplane.events._pg_notify import NotifyHub, hint_payload, payload_fits, wake_payload
from runplane.events.batching import Hint, StreamBatch
from runplane.events.memory import parse_event_id

logger = logging.getLogger(__name__)

QUERIES = load_queries("runplane.events", "postgres.sql")

#: Events a subscriber reads per round trip.
_BATCH = 500
#: Streams one cleanup statement deletes.
_EXPIRE_BATCH = 1000
#: The largest `bigint`: no event can follow it.
_MAX_SEQ = 2**63 - 1

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    try:
        yield
    except pg_errors.UndefinedTable as exc:
        raise StoreUnavailable(
            "the event tables are missing: run `runplane migrate` (or open the PostgreSQL store) first"
        ) from exc
    except psycopg.DataError as exc:
        raise InvalidInput(f"the database refused a value: {exc}") from exc
    except psycopg.Error as exc:  # includes the pool's PoolTimeout
        # The driver's message names host and user: it stays in the cause, for the server's log.
        raise StoreUnavailable(f"event bus unavailable: {type(exc).__name__}") from exc


class PostgresBus:
    """Run streams and hints over PostgreSQL, shared by API servers and workers.

    Args:
        conninfo: a libpq connection string or `postgresql://` URL (no runplane parameters).
        channel: the PostgreSQL notification channel of the bus (one per database is enough).
        max_connections: bound of the pool for reads and writes (the LISTEN connection comes on top).
        pool_timeout: how long a caller waits for a pooled connection.
        max_events: events kept per run for replay (trimmed in steps, see the module doc).
        retention_seconds: how long an ended stream stays available to late or resuming clients.
        idle_ttl_seconds: a stream nobody writes to for this long is dropped even if never ended.
        cleanup_seconds: the least time between two retention sweeps of this bus.
        poll_seconds: how often a waiting subscriber re-reads its stream without a wake-up.
        confirm_timeout: how long `listen`/`subscribe` wait for the LISTEN side to confirm.
        health_check_seconds: idle time after which the LISTEN connection is pinged.
        synchronous_commit: wait for each publish's WAL flush (see the module doc).
        application_name: reported in `pg_stat_activity` (the LISTEN connection adds `-listen`)
            unless the conninfo sets one.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        channel: str = "runplane",
        max_connections: int = 5,
        pool_timeout: float = 10.0,
        max_events: int = 10_000,
        retention_seconds: float = 300.0,
        idle_ttl_seconds: float = 86_400.0,
        cleanup_seconds: float = 60.0,
        poll_seconds: float = 5.0,
        confirm_timeout: float = 5.0,
        health_check_seconds: float = 30.0,
        synchronous_commit: bool = False,
        application_name: str = "runplane-bus",
    ) -> None:
        if max_events < 1:
            raise InvalidInput("max_events must be at least 1")
        if not channel or len(channel.encode()) > 63:
            raise InvalidInput("the notification channel must have 1 to 63 bytes")
        self.channel = channel
        self.max_events = max_events
        #: Trimming runs on every `trim_every`-th publish of a run, deleting that many rows at once.
        self.trim_every = max(1, min(100, max_events // 10))
        self.retention_seconds = retention_seconds
        self.idle_ttl_seconds = max(idle_ttl_seconds, retention_seconds)
        self.cleanup_seconds = cleanup_seconds
        self.poll_seconds = poll_seconds
        self._conninfo = conninfo
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._synchronous_commit = synchronous_commit
        named = "application_name" in conninfo_to_dict(conninfo)
        self._pool_kwargs: dict[str, Any] = {} if named else {"application_name": application_name}
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._wakers: set[asyncio.Event] = set()
        self._next_cleanup = 0.0
        self._cleanup_task: asyncio.Task[None] | None = None
        self._hub = NotifyHub(
            conninfo,
            channel,
            self._send,
            connect_kwargs={} if named else {"application_name": f"{application_name}-listen"},
            confirm_timeout=confirm_timeout,
            health_check_seconds=health_check_seconds,
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBus:
        """A bus on `postgresql://user@host:port/db` (or `postgres://`), not connected until used.

        The store's `pool_*` URL parameters are ignored (the bus has its own small pool); every other
        parameter goes to libpq.

        Args:
            url: the database URL (the store's).
            options: `PostgresBus` keyword arguments.
        """
        conninfo, _store_pool = parse_url(url)
        return cls(conninfo, **options)

    def __repr__(self) -> str:
        return (
            f"<PostgresBus channel={self.channel!r} keys={self._hub.channel_count()} "
            f"listening={self._hub.listening}>"
        )

    # -- plumbing -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the event bus is closed")

    async def _open_pool(self) -> AsyncConnectionPool[Conn]:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                self._check_open()
                pool: AsyncConnectionPool[Conn] = GuardedPool(
                    self._conninfo,
                    breaker=breaker_for(self._conninfo),
                    kwargs={"autocommit": True, **self._pool_kwargs},
                    min_size=1,
                    max_size=self._max_connections,
                    timeout=self._pool_timeout,
                    configure=None if self._synchronous_commit else _asynchronous_commit,
                    # No check query per checkout (a round trip per published event): `_connection`
                    # drops connections the server closed without one (`closed_by_server`).
                    check=None,
                    open=False,
                    name="runplane-bus",
                )
                with _translate_errors():
                    await pool.open()
                self._pool = pool
        return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        self._check_open()
        pool = await self._open_pool()
        with _translate_errors():
            # A pooled connection the server closed while it sat idle (restart, termination, idle
            # timeout) is dropped here rather than failing the caller's write. Not the pool's `check`
            # hook: the pool backs off for seconds after each failed check.
            for _attempt in range(self._max_connections):
                async with pool.connection() as conn:
                    if closed_by_server(conn):
                        await conn.close()  # the pool discards it and opens another
                        continue
                    yield conn
                    return
            async with pool.connection() as conn:
                yield conn

    async def _send(self, payload: str) -> None:
        async with self._connection() as conn:
            await conn.execute(QUERIES["notify"], {"channel": self.channel, "payload": payload})

    def _wake(self, run_id: str) -> str:
        payload = wake_payload(run_id)
        if not payload_fits(payload):
            raise InvalidInput("run id too long for a PostgreSQL notification")
        return payload

    # -- streams --------------------------------------------------------------------------------

    async def publish(self, run_id: str, event: str, data: bytes) -> str:
        """Append an event; a publish after `end_stream` is dropped (returns the last event's id).

        Raises:
            StoreUnavailable: PostgreSQL failed, or the event tables are missing.
        """
        params = {
            "run_id": run_id,
            "event": event,
            "data": data,
            "max_events": self.max_events,
            "trim_every": self.trim_every,
            "channel": self.channel,
            "wake": self._wake(run_id),
        }
        async with self._connection() as conn:
            row = await (await conn.execute(QUERIES["publish"], params)).fetchone()
            if row is None:
                # The stream ended: the publisher (a worker that lost its run) is too late.
                row = await (await conn.execute(QUERIES["last_seq"], {"run_id": run_id})).fetchone()
        self._maybe_expire()
        return str(row[0] if row is not None else 0)

    async def enqueue(self, run_id: str, event: str, data: bytes) -> None:
        """`publish` (this bus writes at once; `ResilientBus` batches with `publish_many`)."""
        await self.publish(run_id, event, data)

    async def flush(self, run_id: str) -> None:
        """Nothing is queued here."""

    async def publish_many(self, batches: Sequence[StreamBatch], hints: Sequence[Hint] = ()) -> None:
        """Append several runs' events and end marks, then send `hints` (from `hint_here`), in one
        statement (see `publish_many` in `postgres.sql`); a run's events after its stream ended are
        dropped.

        Raises:
            StoreUnavailable: PostgreSQL failed (nothing was written), or the event tables are missing.
        """
        merged: dict[str, tuple[list[tuple[str, bytes]], bool]] = {}
        for batch in batches:
            events, ended = merged.get(batch.run_id, ([], False))
            if not ended:
                events.extend(batch.events)
            merged[batch.run_id] = (events, ended or batch.end)
        payloads: dict[str, None] = {}
        for hint in hints:
            payload = hint_payload(hint.channel, hint.message)
            if payload in payloads:
                # PostgreSQL folds a transaction's equal notifications into one: one copy comes back.
                self.hint_lost(hint)
            payloads[payload] = None
        if not merged and not payloads:
            return
        run_ids = list(merged)
        params = {
            "run_ids": run_ids,
            "ends": [merged[run_id][1] for run_id in run_ids],
            "wakes": [self._wake(run_id) for run_id in run_ids],
            "event_runs": [run_id for run_id in run_ids for _ in merged[run_id][0]],
            "events": [event for run_id in run_ids for event, _ in merged[run_id][0]],
            "datas": [data for run_id in run_ids for _, data in merged[run_id][0]],
            "max_events": self.max_events,
            "trim_every": self.trim_every,
            "channel": self.channel,
            "hints": list(payloads),
        }
        async with self._connection() as conn:
            await conn.execute(QUERIES["publish_many"], params)
        self._maybe_expire()

    async def end_stream(self, run_id: str) -> None:
        """Mark the stream complete (idempotent); it is deleted `retention_seconds` later.

        Raises:
            StoreUnavailable: PostgreSQL failed, or the event tables are missing.
        """
        params = {"run_id": run_id, "channel": self.channel, "wake": self._wake(run_id)}
        async with self._connection() as conn:
            await conn.execute(QUERIES["end_stream"], params)
        self._maybe_expire()

    async def latest_event_id(self, run_id: str) -> str | None:
        """The stream's last event id, None when it has none.

        Raises:
            StoreUnavailable: PostgreSQL failed, or the event tables are missing.
        """
        async with self._connection() as conn:
            row = await (await conn.execute(QUERIES["last_seq"], {"run_id": run_id})).fetchone()
        return str(row[0]) if row is not None and row[0] else None

    async def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        """Events after `last_event_id`, then live ones until the stream ends (see
        `subscribe_batches`)."""
        async with contextlib.aclosing(self.subscribe_batches(run_id, last_event_id)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def subscribe_batches(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """Events after `last_event_id`, then live ones until the stream ends, as they are read: each
        item holds every event one read returned (never none).

        A stream that does not exist is waited for when reading from the start (its run has not
        published yet), but ends the iteration when resuming or once read from: it expired.

        Raises:
            InvalidInput: `last_event_id` is not a decimal event id (before anything is yielded).
            StoreUnavailable: PostgreSQL failed, or the bus was closed.
        """
        after = min(parse_event_id(last_event_id), _MAX_SEQ)
        self._check_open()
        self._wake(run_id)
        changed = asyncio.Event()
        self._wakers.add(changed)

        def wake(_message: str) -> None:
            changed.set()

        try:
            # Registered before the first read: a publish committed after that read always wakes us.
            async with self._hub.wakes(run_id, wake):
                while True:
                    changed.clear()
                    missing, ended, events = await self._read(run_id, after)
                    if events:
                        after = int(events[-1].id)
                        yield events
                    if len(events) == _BATCH:
                        continue
                    if ended or (missing and after > 0):
                        return
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_seconds):
                            await changed.wait()
                    self._check_open()
        finally:
            self._wakers.discard(changed)

    async def _read(self, run_id: str, after: int) -> tuple[bool, bool, list[StreamEvent]]:
        params = {"run_id": run_id, "after": after, "limit": _BATCH}
        async with self._connection() as conn:
            rows = await (await conn.execute(QUERIES["read_events"], params)).fetchall()
        missing, ended = bool(rows[0][0]), bool(rows[0][1])
        events = [
            StreamEvent(event, bytes(data), str(seq)) for _, _, seq, event, data in rows if seq is not None
        ]
        return missing, ended, events

    # -- retention ------------------------------------------------------------------------------

    def _maybe_expire(self) -> None:
        now = time.monotonic()
        if now < self._next_cleanup or (self._cleanup_task is not None and not self._cleanup_task.done()):
            return
        self._next_cleanup = now + self.cleanup_seconds
        self._cleanup_task = asyncio.create_task(self._expire_in_background(), name="runplane-bus-cleanup")

    async def _expire_in_background(self) -> None:
        try:
            await self.expire()
        except StoreUnavailable as exc:
            logger.warning("event stream cleanup failed: %s", exc, extra={"action": "bus_cleanup"})

    async def expire(self) -> int:
        """Delete the streams past retention (ended) or idle TTL (never ended), with their events.

        Runs by itself at most every `cleanup_seconds`; public for maintenance and tests.
        Returns how many streams were deleted.
        """
        total = 0
        params = {
            "retention": self.retention_seconds,
            "idle": self.idle_ttl_seconds,
            "batch": _EXPIRE_BATCH,
        }
        while True:
            async with self._connection() as conn:
                row = await (await conn.execute(QUERIES["expire_streams"], params)).fetchone()
            deleted = int(row[0]) if row is not None else 0
            total += deleted
            if deleted < _EXPIRE_BATCH:
                if total:
                    logger.info("deleted %d expired event streams", total, extra={"action": "bus_cleanup"})
                return total

    # -- hints ----------------------------------------------------------------------------------

    async def notify(self, channel: str, message: str = "") -> None:
        """Send a hint; database errors are logged and swallowed (every listener has a fallback).

        Raises:
            InvalidInput: channel and message together exceed a notification's 8000 bytes.
        """
        if self._closed:
            return
        hint = self.hint_here(channel, message)
        try:
            await self._send(hint_payload(channel, message))
        except StoreUnavailable as exc:
            self.hint_lost(hint)
            logger.warning(
                "dropped hint on %s: %s", channel, exc, extra={"action": "bus_notify", "channel": channel}
            )

    def hint_here(self, channel: str, message: str) -> Hint:
        """This process's listeners hear the hint now; other processes' by way of a notification,
        from `notify` or `publish_many` (see `batching.SupportsBatchedHints`).

        Raises:
            InvalidInput: channel and message together exceed a notification's 8000 bytes.
        """
        if not payload_fits(hint_payload(channel, message)):
            raise InvalidInput("hint too long for a PostgreSQL notification")
        return Hint(channel, message, echo=self._hub.deliver_locally(channel, message))

    def hint_lost(self, hint: Hint) -> None:
        """The hint was not sent: its copy from PostgreSQL is not coming."""
        if hint.echo:
            self._hub.echoes.forget(hint.channel, hint.message)

    @asynccontextmanager
    async def listen(self, channel: str) -> AsyncIterator[AsyncIterator[str]]:
        """Hints on `channel` sent after entry, and none sent before (confirmed by a barrier
        notification unless PostgreSQL is unreachable: see `_pg_notify`)."""
        self._check_open()
        queue: asyncio.Queue[str] = asyncio.Queue()

        async def messages() -> AsyncIterator[str]:
            while True:
                yield await queue.get()

        async with self._hub.hints(channel, queue.put_nowait):
            yield messages()

    async def close(self) -> None:
        """Stop listening and close the pool; waiting subscribers raise `StoreUnavailable`,
        listeners just stop receiving."""
        if self._closed:
            return
        self._closed = True
        for changed in list(self._wakers):
            changed.set()
        if self._cleanup_task is not None:
            self._cleanup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleanup_task
        await self._hub.close()
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _asynchronous_commit(conn: Conn) -> None:
    await conn.execute("SET synchronous_commit = off")
