"""The plumbing every part of `PostgresStore` shares: the pool, migrations, transactions retried after a
lost race, and the thread-lock and settlement steps of the store's transactions.

See `store.py` for how the store gets its atomicity from row locks.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import psycopg
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runplane.core.clock import Clock, SystemClock
from runplane.core.errors import NotFound, StoreUnavailable
from runplane.core.lifecycle import ThreadSettlement, webhook_payload, webhook_url
from runplane.core.models import Json, Run, ThreadStatus
from runplane.db.postgres import GuardedPool, PoolSettings, breaker_for, retryable, translate_errors
from runplane.db.sql import Migration, load_migrations, load_queries
from runplane.stores.postgres._rows import Conn, fetch_all, fetch_one

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_PACKAGE = "runplane.stores.postgres"
QUERIES = load_queries(_PACKAGE)
MIGRATIONS = load_migrations(_PACKAGE)

#: `pg_advisory_xact_lock` key that serializes migrations ("runplane" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"runplane", "big")

#: Transactions retried after a deadlock, a serialization failure or a lost insert race.
MAX_ATTEMPTS = 5


async def one(conn: Conn, name: str, /, **params: Any) -> DictRow | None:
    """The first row of the named query."""
    return await fetch_one(conn, QUERIES[name], **params)


async def execute(conn: Conn, name: str, /, **params: Any) -> None:
    """Run the named query, rows unread."""
    await conn.execute(QUERIES[name], params)


async def send(conn: Conn, name: str, /, **params: Any) -> AsyncCursor[DictRow]:
    """Run the named query, its rows read later from the cursor. In a pipelined transaction it goes
    out with the next statement whose rows are read (or with COMMIT): one round trip for several."""
    return await conn.execute(QUERIES[name], params)


async def every(conn: Conn, name: str, /, **params: Any) -> list[DictRow]:
    """Every row of the named query."""
    return await fetch_all(conn, QUERIES[name], **params)


def locked(row: DictRow | None) -> DictRow:
    """The row an update of a run this transaction holds locked returned (it always matches)."""
    assert row is not None
    return row


class PostgresBase:
    """The pool, migrations and transaction plumbing of `PostgresStore`.

    Args:
        conninfo: a libpq connection string or `postgresql://` URL (no runplane parameters).
        clock: time source for every timestamp the store writes.
        pool: pool size and checkout timeout.
    """

    def __init__(
        self, conninfo: str, *, clock: Clock | None = None, pool: PoolSettings | None = None
    ) -> None:
        self._conninfo = conninfo
        self._clock = clock or SystemClock()
        self._pool_settings = pool or PoolSettings()
        self._pool: AsyncConnectionPool[Conn] | None = None

    @property
    def checkpointer_url(self) -> str:
        """The conninfo, for LangGraph's `AsyncPostgresSaver.from_conn_string` on the same database."""
        return self._conninfo

    def __repr__(self) -> str:
        settings = self._pool_settings
        state = "open" if self._pool is not None else "closed"
        return f"<PostgresStore {state} pool={settings.min_size}..{settings.max_size}>"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        """Open the pool and, unless `migrate` is False, apply pending migrations.

        Raises:
            StoreUnavailable: the server cannot be reached within the pool timeout.
        """
        if self._pool is not None:
            return
        settings = self._pool_settings
        # Checked connections, and a breaker that fails checkouts at once while the server is down.
        pool: AsyncConnectionPool[Conn] = GuardedPool(
            self._conninfo,
            breaker=breaker_for(self._conninfo),
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.timeout,
            open=False,
            name="runplane",
        )
        try:
            with translate_errors():
                await pool.open(wait=True, timeout=settings.timeout)
            self._pool = pool
            if migrate:
                await self.migrate()
        except BaseException:
            self._pool = None
            await pool.close()
            raise

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def migrate(self, target: int | None = None) -> list[int]:
        """Apply the migrations not yet recorded, up to version `target` (all by default).

        Each migration runs in its own transaction under a `pg_advisory_xact_lock`, so processes that
        start together apply it once. Returns the versions this call applied.
        """
        applied: list[int] = []
        for migration in MIGRATIONS:
            if target is not None and migration.version > target:
                break
            if await self._transaction(functools.partial(self._apply, migration=migration), pipeline=False):
                applied.append(migration.version)
        return applied

    async def _apply(self, conn: Conn, *, migration: Migration) -> bool:
        await execute(conn, "migration_lock", key=MIGRATION_LOCK_KEY)
        await execute(conn, "create_migrations_table")
        if await one(conn, "migration_applied", version=migration.version):
            return False
        await conn.execute(migration.sql)
        await execute(
            conn, "record_migration", version=migration.version, name=migration.name, now=self._clock.now()
        )
        logger.info(
            "applied migration %04d_%s",
            migration.version,
            migration.name,
            extra={"action": "migrate", "version": migration.version},
        )
        return True

    async def applied_migrations(self) -> list[int]:
        """Versions recorded in `runplane_migrations`."""
        async with self._connection() as conn:
            return [row["version"] for row in await every(conn, "applied_migrations")]

    # -- plumbing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit) for reads; errors are translated."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        with translate_errors():
            async with self._pool.connection() as conn:
                yield conn

    async def _statement(self, name: str, /, **params: Any) -> list[DictRow]:
        """Every row of the named statement, run alone: autocommitted, its own transaction (one
        round trip, the cheapest transaction there is: see migration 0017's functions)."""

        async def once(conn: Conn) -> list[DictRow]:
            return await every(conn, name, **params)

        result: list[DictRow] = await self._retrying(once)
        return result

    async def _transaction(self, body: Callable[[Conn], Awaitable[T]], *, pipeline: bool = True) -> T:
        """Run `body` in one transaction, again after a deadlock or a lost insert race.

        Pipelined unless `pipeline` is False (a script of several statements, as a migration, cannot
        be pipelined)."""
        result: T = await self._run_transaction(body, pipeline=pipeline)
        return result

    async def _transaction_then(
        self, body: Callable[[Conn], Awaitable[R]], after_commit: Callable[[R], Awaitable[T]]
    ) -> T:
        """`_transaction`, then `after_commit` on what `body` returned, once committed.

        So a body may send its last statements without reading them (`send`) and return their
        cursors: their rows come back with the COMMIT, one round trip fewer, and `after_commit`
        reads them."""
        result: T = await self._run_transaction(body, pipeline=True, after_commit=after_commit)
        return result

    async def _run_transaction(
        self,
        body: Callable[[Conn], Awaitable[Any]],
        *,
        pipeline: bool,
        after_commit: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> Any:
        async def once(conn: Conn) -> Any:
            # Pipelined: BEGIN goes with the first statement, and the statements whose rows are not
            # read go with the next one, or with COMMIT.
            async with contextlib.AsyncExitStack() as stack:
                if pipeline:
                    await stack.enter_async_context(conn.pipeline())
                await stack.enter_async_context(conn.transaction())
                result = await body(conn)
            return result if after_commit is None else await after_commit(result)

        return await self._retrying(once)

    async def _retrying(self, once: Callable[[Conn], Awaitable[T]]) -> T:
        """`once` on a pooled connection, again (on another checkout) after a deadlock, a
        serialization failure or a lost insert race; errors are translated."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        with translate_errors():
            for attempt in itertools.count(1):
                try:
                    async with self._pool.connection() as conn:
                        return await once(conn)
                except psycopg.Error as exc:
                    if attempt >= MAX_ATTEMPTS or not retryable(exc):
                        raise
                    logger.debug("retrying after %s", type(exc).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _settle(
        self,
        conn: Conn,
        thread_id: str,
        outcome: ThreadStatus | None,
        *,
        touch: bool = True,
        values: Json | None = None,
        interrupts: Json | None = None,
        error: ThreadSettlement | None = None,
    ) -> AsyncCursor[DictRow]:
        """Recompute a locked thread's queue head; with an `outcome`, its status too (busy while a run
        is active, else the outcome); with `error` a settlement that sets it, the thread's error.
        Its row (`head_claimable`) is read from the returned cursor, or not at all."""
        now = self._clock.now()
        return await send(
            conn,
            "settle_thread",
            thread_id=thread_id,
            outcome=outcome,
            now=now if touch else None,
            due_at=now,
            set_values=values is not None,
            values=Jsonb(values) if values is not None else None,
            interrupts=Jsonb(interrupts) if interrupts is not None else None,
            set_error=error is not None and error.sets_error,
            error=error.error if error is not None else None,
        )

    async def _settle_with(
        self,
        conn: Conn,
        thread_id: str,
        settlement: ThreadSettlement,
        *,
        values: Json | None = None,
        interrupts: Json | None = None,
    ) -> AsyncCursor[DictRow]:
        """Apply a lifecycle plan's `settlement` to a locked thread (one statement; see `_settle`)."""
        return await self._settle(
            conn, thread_id, settlement.status, values=values, interrupts=interrupts, error=settlement
        )

    async def _lock_run(self, conn: Conn, run_id: str) -> DictRow | None:
        """Lock a run's thread, then the run; None when the run does not exist."""
        if await one(conn, "lock_thread_of_run", run_id=run_id) is None:
            return None
        return await one(conn, "get_run_for_update", run_id=run_id)

    async def _lock_owned_run(self, conn: Conn, run_id: str, owner: str, thread_id: str | None) -> DictRow:
        row = await self._lock_run(conn, run_id)
        if row is None or row["owner"] != owner or (thread_id is not None and row["thread_id"] != thread_id):
            raise NotFound(f"run {run_id} not found")
        return row

    async def _lock_owned_thread(self, conn: Conn, thread_id: str, owner: str) -> DictRow:
        row = await one(conn, "lock_thread", thread_id=thread_id)
        if row is None or row["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return row

    async def _owned_thread(self, conn: Conn, thread_id: str, owner: str) -> DictRow:
        row = await one(conn, "get_thread", thread_id=thread_id)
        if row is None or row["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return row

    async def _enqueue_webhook(self, conn: Conn, run: Run) -> None:
        """Put the run's webhook in the outbox, in the transaction that made it terminal."""
        url = webhook_url(run)
        if url is None:
            return
        thread = await one(conn, "thread_values", thread_id=run.thread_id)
        values = None if thread is None else thread["state_values"]
        await execute(
            conn,
            "insert_webhook",
            delivery_id=str(uuid.uuid4()),
            run_id=run.run_id,
            url=url,
            payload=Jsonb(webhook_payload(run, values)),
            now=self._clock.now(),
        )
