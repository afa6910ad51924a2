"""Opening LangGraph's persistence (checkpointer, long-term store) on runplane's database URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import aiosqlite

from runplane.core.errors import InvalidInput

try:
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
except ImportError:  # pragma: no cover - the postgres extra is not installed
    AsyncConnectionPool = None  # type: ignore[assignment,misc]

#: `pg_advisory_lock` key serializing LangGraph's `setup()` calls across processes
#: ("rpckpt" in ASCII; the store's migrations use another key).
SETUP_LOCK_KEY = int.from_bytes(b"rpckpt", "big")

Kind = Literal["memory", "sqlite", "postgres"]


def database_kind(database_url: str) -> tuple[Kind, str]:
    """The backend of `database_url` and the URL normalized: a bare file path (as
    `SqliteStore.checkpointer_url` gives) is a SQLite file.

    Raises:
        InvalidInput: unknown scheme.
    """
    scheme = urlsplit(database_url).scheme.split("+", 1)[0].lower()
    if not scheme and database_url:
        return "sqlite", "sqlite:///" + database_url
    if scheme in ("memory", "sqlite"):
        return scheme, database_url  # type: ignore[return-value]
    if scheme in ("postgres", "postgresql"):
        try:  # psycopg is the postgres extra's
            from runplane.db.postgres import parse_url
        except ImportError as exc:  # pragma: no cover
            raise InvalidInput(f"PostgreSQL needs: pip install 'runplane[postgres]' ({exc})") from exc
        # libpq refuses runplane's own `pool_*` parameters: they size the store's pool only.
        return "postgres", parse_url(database_url)[0]
    raise InvalidInput(f"no LangGraph persistence for database URL scheme {scheme!r}")


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:` URL: `sqlite:///rel.db` -> `rel.db`, `sqlite:////abs.db` -> `/abs.db`,
    `sqlite://` or `sqlite:///:memory:` -> `:memory:`."""
    rest = url.split(":", 1)[1].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]
        rest = rest[1:] if rest.startswith("/") else rest
    path = unquote(rest)
    return path or ":memory:"


async def tune_sqlite(conn: aiosqlite.Connection) -> None:
    """Set a LangGraph connection to the store's file up as the store's own: NORMAL commits without
    an fsync each in WAL mode (a power cut may lose the last commits, never corrupt), and waiting
    for another connection's write lock instead of failing at once."""
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA busy_timeout = 5000")


@asynccontextmanager
async def postgres_pool(conninfo: str, *, max_size: int) -> AsyncIterator[AsyncConnectionPool[Any]]:
    """A pool configured as LangGraph's `from_conn_string` does: autocommit, no server-side
    prepares, dict rows."""
    if AsyncConnectionPool is None:  # pragma: no cover
        raise InvalidInput("PostgreSQL needs: pip install 'runplane[postgres]'")
    # Checked connections (a restarted server's dead ones are replaced, never handed to LangGraph),
    # behind the database's circuit breaker (fail fast while it is down).
    from runplane.db.postgres import GuardedPool, breaker_for

    pool: AsyncConnectionPool[Any] = GuardedPool(
        conninfo,
        breaker=breaker_for(conninfo),
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


async def setup_postgres_once(pool: AsyncConnectionPool[Any], setup: Callable[[], Awaitable[None]]) -> None:
    """Run a LangGraph `setup()`, one process at a time.

    `setup()` is not safe to run concurrently: processes starting together on a new database race
    on its migration table (UniqueViolation). A session advisory lock, held on another pooled
    connection meanwhile, makes them take turns. It is polled with `pg_try_advisory_lock` rather
    than awaited with `pg_advisory_lock`, because a waiter blocked in a statement holds a snapshot,
    and the holder's `CREATE INDEX CONCURRENTLY` waits for every older snapshot: a deadlock.
    """
    async with pool.connection() as conn:
        while True:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SETUP_LOCK_KEY,))
            row = await cursor.fetchone()
            if row is not None and row["ok"]:
                break
            await asyncio.sleep(0.05)
        try:
            await setup()
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_KEY,))
