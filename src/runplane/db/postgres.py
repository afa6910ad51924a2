"""The psycopg edge, shared by the PostgreSQL store and bus: URLs to conninfo + pool settings, and driver
errors to core errors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import select
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.conninfo
from psycopg import errors as pg_errors
from psycopg.abc import Params, Query
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from runplane.core.errors import Conflict, InvalidInput, RunplaneError, StoreUnavailable, ThreadBusy

#: Query parameters of the URL that configure the pool; they are not passed to libpq.
POOL_PARAMS = ("pool_min_size", "pool_max_size", "pool_timeout")

T = TypeVar("T")

#: Unique constraints whose violation means "lost a race; run the transaction again".
RACE_CONSTRAINTS = frozenset({"runs_idempotency_key", "runs_one_running_per_thread"})


# -- driver edge ----------------------------------------------------------------------------------


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn psycopg errors into core errors (`raise ... from exc`); core errors pass through."""
    try:
        yield
    except RunplaneError:
        raise
    except pg_errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name
        if constraint == "runs_one_running_per_thread":
            raise ThreadBusy() from exc
        if constraint == "threads_pkey":
            raise Conflict("thread already exists") from exc
        if constraint == "runs_pkey":
            raise Conflict("run already exists") from exc
        raise Conflict(f"conflicts with an existing record ({constraint})") from exc
    except pg_errors.IntegrityError as exc:
        raise Conflict(f"conflicts with the current state ({exc.diag.constraint_name})") from exc
    except psycopg.DataError as exc:
        raise InvalidInput(f"the database refused a value: {exc}") from exc
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        # Connection failures, pool timeouts, server shutdowns. The driver's message names the host
        # and user: it stays in the chained cause, for the server's log, never for a client.
        raise StoreUnavailable(UNAVAILABLE) from exc
    except psycopg.Error as exc:
        # (Unexpectedly) our own SQL.
        raise StoreUnavailable(f"PostgreSQL failed: {type(exc).__name__}") from exc


def retryable(exc: psycopg.Error) -> bool:
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return True
    return isinstance(exc, pg_errors.UniqueViolation) and exc.diag.constraint_name in RACE_CONSTRAINTS


# -- URL ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool size and checkout timeout."""

    min_size: int = 1
    max_size: int = 10
    timeout: float = 30.0


DEFAULT_POOL = PoolSettings()


def parse_url(url: str) -> tuple[str, PoolSettings]:
    """Split a `postgresql://` or `postgres://` URL into a libpq conninfo and pool settings.

    `pool_min_size`, `pool_max_size` and `pool_timeout` query parameters are runplane's; every other
    parameter is passed to libpq untouched.

    Raises:
        InvalidInput: not a PostgreSQL URL, or a bad pool parameter.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgres", "postgresql"):
        raise InvalidInput(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in POOL_PARAMS}
    theirs = [(key, value) for key, value in query if key not in POOL_PARAMS]
    try:
        settings = PoolSettings(
            min_size=int(ours.get("pool_min_size", DEFAULT_POOL.min_size)),
            max_size=int(ours.get("pool_max_size", DEFAULT_POOL.max_size)),
            timeout=float(ours.get("pool_timeout", DEFAULT_POOL.timeout)),
        )
    except ValueError as exc:
        raise InvalidInput(f"bad pool parameter in database URL: {exc}") from exc
    if not 0 <= settings.min_size <= settings.max_size or settings.max_size < 1 or settings.timeout <= 0:
        raise InvalidInput(f"bad pool size or timeout in database URL: {settings}")
    new_query = urlencode(theirs, quote_via=quote) if ours else parts.query
    return urlunsplit(parts._replace(scheme="postgresql", query=new_query)), settings


# -- failing fast while the server is down ---------------------------------------------------------


class CircuitBreaker:
    """Fails checkouts at once while PostgreSQL is known to be down, instead of at the pool timeout.

    Closed: checkouts go to the pool. A failed connection attempt (the pool's own, in the background,
    or a caller's) or a checkout timeout opens it: a checkout then gets a pooled connection that is
    ready and passes its check, or fails with `StoreUnavailable` at once, and so do checkouts already
    waiting in the pool. After a cooldown (growing from
    `first_cooldown` to `max_cooldown`, with jitter) one checkout is let through as a probe: its
    success closes the breaker, its failure opens it again. So a down server costs each request
    microseconds, and the server sees one connection attempt per cooldown from each process.
    """

    def __init__(self, *, first_cooldown: float = 0.25, max_cooldown: float = 2.0) -> None:
        self.first_cooldown = first_cooldown
        self.max_cooldown = max_cooldown
        self.failures = 0
        self.open_until = 0.0
        self._probing = False
        self._tripped = asyncio.Event()

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def retry_after(self) -> float:
        """Seconds until the next probe (what a 503's Retry-After should say)."""
        return max(0.0, self.open_until - time.monotonic())

    def failure(self) -> None:
        self.failures += 1
        cooldown = min(self.max_cooldown, self.first_cooldown * 2 ** (self.failures - 1))
        self.open_until = time.monotonic() + cooldown * random.uniform(0.75, 1.0)
        self._probing = False
        self._tripped.set()

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self._probing = False
        if self._tripped.is_set():
            self._tripped = asyncio.Event()

    def end_probe(self) -> None:
        self._probing = False

    def admit(self) -> bool:
        """Whether a checkout may go to the pool now; False: fail it fast."""
        if not self.failures:
            return True
        if self._probing or time.monotonic() < self.open_until:
            return False
        self._probing = True  # this checkout is the probe
        return True

    async def race(self, checkout: Awaitable[T], give_back: Callable[[T], Awaitable[object]]) -> T:
        """`checkout`, abandoned as soon as the breaker opens meanwhile. A connection the checkout
        got anyway (the caller was cancelled, or the breaker opened, at that very moment) goes back
        through `give_back`, never leaks."""
        task = asyncio.ensure_future(checkout)
        tripped = asyncio.ensure_future(self._tripped.wait())

        def reclaim(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                _background(give_back(done.result()))

        try:
            await asyncio.wait({task, tripped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            task.add_done_callback(reclaim)
            raise
        finally:
            tripped.cancel()
        if not task.done():
            task.cancel()  # the pool hands a connection given meanwhile back to itself...
            task.add_done_callback(reclaim)  # ...unless it was handed over already
            raise StoreUnavailable(UNAVAILABLE)
        return task.result()


_tasks: set[asyncio.Task[object]] = set()


def _background(call: Awaitable[object]) -> None:
    task: asyncio.Task[object] = asyncio.ensure_future(call)
    _tasks.add(task)  # a reference, so it is not collected mid-way
    task.add_done_callback(_tasks.discard)


#: What a caller is told while PostgreSQL is down (never a host, user or driver message).
UNAVAILABLE = "PostgreSQL is unavailable"

_breakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, CircuitBreaker]] = (
    weakref.WeakKeyDictionary()
)


def breaker_for(conninfo: str) -> CircuitBreaker:
    """The breaker of one database server, shared by every pool of this event loop that reaches it
    (the store's, the bus's, LangGraph's): when one sees the server go, all fail fast."""
    loop = asyncio.get_running_loop()
    per_loop = _breakers.setdefault(loop, {})
    key = _server_of(conninfo)
    breaker = per_loop.get(key)
    if breaker is None:
        breaker = per_loop[key] = CircuitBreaker()
    return breaker


def _server_of(conninfo: str) -> str:
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return conninfo
    return f"{info.get('host', '')}:{info.get('port', '')}"


def guarded_connection_class(base: type[Any], breaker: CircuitBreaker) -> type[Any]:
    """`base` whose `connect` reports to `breaker`: the pool's own reconnection attempts, in the
    background, are what notice a down server first."""

    class Guarded(base):  # type: ignore[misc]
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            try:
                conn = await super().connect(*args, **kwargs)
            except psycopg.OperationalError:
                breaker.failure()
                raise
            breaker.success()
            return conn

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


#: How long a checkout waits for a pooled connection while the breaker is open.
_NO_WAIT = 0.01


class GuardedPool(AsyncConnectionPool[Any]):
    """An `AsyncConnectionPool` behind a `CircuitBreaker`; connections are checked before use.

    While the breaker is open, `getconn` (and so `connection()`) raises `StoreUnavailable` at once
    unless a pooled connection is ready.
    Connections are checked (`closed_by_server`, no round trip) before they are handed out, so a
    connection the server closed (a restart, `AdminShutdown`) is replaced, never given to a caller.
    Not the pool's `check` hook, an empty query per checkout: that doubled the round trips of every
    autocommitted statement, and the pool sleeps for a second or more after each failed check.
    Failed reconnections are given up after `reconnect_timeout` (short: 2 s by default) rather than
    retried on the pool's own growing backoff, so that once the server is back the next checkout
    connects at once; the breaker's cooldown is the backoff.
    """

    def __init__(self, conninfo: str, *, breaker: CircuitBreaker, **kwargs: Any) -> None:
        kwargs["connection_class"] = guarded_connection_class(
            kwargs.get("connection_class", psycopg.AsyncConnection), breaker
        )
        kwargs.setdefault("check", None)
        kwargs.setdefault("reconnect_timeout", 2.0)
        super().__init__(conninfo, **kwargs)
        self.breaker = breaker

    async def getconn(self, timeout: float | None = None) -> Any:
        # Every pooled connection may be dead after a restart: each is dropped in turn (the pool
        # replaces it), and the last attempt waits for a new one.
        for _ in range(self.max_size):
            conn = await self._guarded_getconn(timeout)
            if not closed_by_server(conn):
                return conn
            await conn.close()
            await self.putconn(conn)  # closed: the pool discards it and opens another
        return await self._guarded_getconn(timeout)

    async def _guarded_getconn(self, timeout: float | None) -> Any:
        if not self.breaker.admit():
            # Known down (or refusing new connections: "too many clients"): a pooled connection
            # that still passes its check is handed out, but nobody waits for a new one.
            try:
                return await super().getconn(_NO_WAIT)
            except PoolTimeout:
                raise StoreUnavailable(UNAVAILABLE) from None
        if not self.breaker.failures and getattr(self, "_pool", None):
            # The breaker is closed and a connection is ready (psycopg_pool's deque of idle ones,
            # private: without it, no shortcut): the checkout takes it without waiting, so there
            # is nothing to race. The race's two futures per checkout were a few per cent of the
            # server's CPU per run.
            return await super().getconn(timeout)
        try:
            conn = await self.breaker.race(super().getconn(timeout), self.putconn)
        except PoolTimeout:
            self.breaker.failure()
            raise
        except BaseException:
            self.breaker.end_probe()  # cancelled, or failed fast: let another checkout probe
            raise
        self.breaker.success()
        return conn


def closed_by_server(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether the server closed an idle connection: it then has a goodbye, or EOF, to read.

    An idle pooled connection has nothing else to read (pooled connections never LISTEN), so this
    costs no round trip.
    """
    if conn.closed:
        return True
    fd = conn.fileno()
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover (Windows)


# -- an attempt's hold, joined by the checkpoint write it fences -----------------------------------


@dataclass(eq=False, slots=True)
class HoldTransaction:
    """An attempt's hold (`PostgresStore.hold_attempt`), offered to the checkpoint write it fences.

    A LangGraph saver on the same database does not write through a connection of its own: it
    hands its statements to `defer`, and the hold runs them in its own transaction, the one that
    share-locks the run while the attempt holds it, right before its COMMIT and in the same round
    trip. So the checkpoint commits with the lease check or not at all, and the fence uses one
    connection, not two (the store's idle in its transaction while the saver's wrote).
    """

    conninfo: str
    #: Only the task that entered the hold may join it: a task started inside copies the context,
    #: and could outlive the hold.
    task: asyncio.Task[Any] | None = field(default_factory=asyncio.current_task)
    open: bool = True
    #: Statements (with their parameters) to run, in order, right before the COMMIT.
    deferred: list[tuple[Query, Params | None]] = field(default_factory=list)

    def defer(self, query: Query, params: Params | None = None) -> None:
        """Run `query` in the hold's transaction, just before it commits; its failure rolls the
        hold back (and fails it)."""
        if not self.open:
            raise RuntimeError("the hold has ended")
        self.deferred.append((query, params))


_hold: ContextVar[HoldTransaction | None] = ContextVar("runplane_hold_transaction", default=None)

#: The database a writer in this task writes to only through the hold it is about to enter
#: (`writing_only_through_hold`).
_writes_only_through_hold: ContextVar[str | None] = ContextVar("runplane_writes_through_hold", default=None)


@contextlib.contextmanager
def offer_hold(conninfo: str) -> Iterator[HoldTransaction]:
    """Offer the hold on the database of `conninfo` to the writes of the current task until the block
    exits (`joinable_hold`)."""
    hold = HoldTransaction(conninfo)
    token = _hold.set(hold)
    try:
        yield hold
    finally:
        hold.open = False
        _hold.reset(token)


def joinable_hold(conninfo: str) -> HoldTransaction | None:
    """The hold offered to this task (`offer_hold`), if any and if it is on the database of
    `conninfo`."""
    hold = _hold.get()
    if hold is None or not hold.open or hold.task is not asyncio.current_task():
        return None
    return hold if same_database(hold.conninfo, conninfo) else None


@contextlib.contextmanager
def writing_only_through_hold(conninfo: str) -> Iterator[None]:
    """Declare that what the fence entered in this block guards writes only through the hold
    (`joinable_hold`) on the database of `conninfo`: nothing else happens in it that the lease
    check must precede. The hold may then check the lease in the very round trip that commits
    (`hold_checks_at_commit`): one round trip in all, and no connection held meanwhile."""
    token = _writes_only_through_hold.set(conninfo)
    try:
        yield
    finally:
        _writes_only_through_hold.reset(token)


def hold_checks_at_commit(conninfo: str) -> bool:
    """Whether a hold entered now on the database of `conninfo` may check the lease at its commit
    (`writing_only_through_hold`)."""
    declared = _writes_only_through_hold.get()
    return declared is not None and same_database(declared, conninfo)


@functools.lru_cache(maxsize=64)
def same_database(conninfo: str, other: str) -> bool:
    """Whether two conninfo strings or URLs name the same database on the same server as the same
    user (pool parameters and connection options aside)."""
    if conninfo == other:
        return True
    keys = ("host", "hostaddr", "port", "dbname", "user")
    try:
        ours, theirs = (psycopg.conninfo.conninfo_to_dict(c) for c in (conninfo, other))
    except psycopg.ProgrammingError:
        return False
    return all(ours.get(key) == theirs.get(key) for key in keys)
