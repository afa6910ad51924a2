"""The SQLite connection: opening it with our pragmas, its queries, migrations, error translation."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

from runplane.core.errors import Conflict, StoreUnavailable, ThreadBusy
from runplane.db.sql import load_migrations, load_queries
from runplane.stores.sqlite._codec import MEMORY, metadata_matches

_PACKAGE = "runplane.stores.sqlite"
QUERIES = load_queries(_PACKAGE)
MIGRATIONS = load_migrations(_PACKAGE)

#: Milliseconds a connection waits for another one's write lock before giving up.
DEFAULT_BUSY_TIMEOUT_MS = 5000


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn driver errors into core errors at the store's edge."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        if "runs.thread_id" in str(exc):  # the runs_one_running partial unique index
            raise ThreadBusy("the thread already has a running run") from exc
        raise Conflict(f"conflicts with an existing record ({exc})") from exc
    except sqlite3.Error as exc:  # "database is locked" after busy_timeout, I/O errors, closed db
        raise StoreUnavailable(f"sqlite: {exc}") from exc


async def fetch_all(db: aiosqlite.Connection, sql: str, params: Mapping[str, Any]) -> list[Any]:
    """Run one statement and read all its rows.

    Every statement goes through here, writes too: a `RETURNING` statement whose rows were not all
    read stays "in progress" and makes the next COMMIT fail.
    """
    return list(await db.execute_fetchall(sql, params))


async def connect(path: str, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> aiosqlite.Connection:
    """A connection in autocommit mode (we issue BEGIN IMMEDIATE ourselves), WAL, NORMAL sync."""
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Not only its own thread: the writer runs idle batches on the event loop's (`sqlite_inline`).
    db = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.row_factory = sqlite3.Row
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        await db.execute_fetchall(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await _switch_to_wal(db, busy_timeout_ms / 1000)
        # NORMAL in WAL mode: a commit is written to the WAL (the OS's page cache) before it
        # returns, so it survives kill -9 of the process; only a power cut can lose the last ones.
        await db.execute_fetchall("PRAGMA synchronous = NORMAL")
        await db.execute_fetchall("PRAGMA foreign_keys = ON")
        await db.create_function("runplane_metadata_matches", 2, metadata_matches, deterministic=True)
    except BaseException:
        await db.close()
        raise
    return db


async def _switch_to_wal(db: aiosqlite.Connection, timeout: float) -> None:
    """`PRAGMA journal_mode = WAL`, again while the file is locked.

    On a new file, connections opening at once each hold a shared lock and want the exclusive one
    the switch needs: SQLite answers "database is locked" at once, without its busy wait, to break
    that deadlock. Once one of them has switched, the mode is persistent and the others pass.
    """
    deadline = time.monotonic() + timeout
    for attempt in itertools.count(1):
        try:
            await db.execute_fetchall("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(min(0.001 * 2**attempt, 0.05))


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script, so a migration runs inside our own transaction
    (`executescript` would commit first)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):  # the `;` ends a statement, not a comment or string
            code = [line for line in buffer.splitlines() if not line.lstrip().startswith("--")]
            if "\n".join(code).strip().strip(";").strip():
                statements.append(buffer.strip())
            buffer = ""
    return statements


async def apply_migrations(db: aiosqlite.Connection, applied_at: int, target: int | None = None) -> list[int]:
    """Apply pending migrations up to version `target`, each in its own transaction.

    Safe from several connections or processes at once: each migration re-reads the version table
    under the write lock, so it is applied exactly once.

    Returns:
        The versions applied by this call.
    """
    applied: list[int] = []
    await fetch_all(db, QUERIES["migrations_table"], {})
    for migration in MIGRATIONS:
        if target is not None and migration.version > target:
            break
        try:
            await fetch_all(db, QUERIES["begin_immediate"], {})
            done = {row[0] for row in await fetch_all(db, QUERIES["applied_migrations"], {})}
            if migration.version not in done:
                for statement in split_statements(migration.sql):
                    await fetch_all(db, statement, {})
                params = {"version": migration.version, "name": migration.name, "applied_at": applied_at}
                await fetch_all(db, QUERIES["record_migration"], params)
                applied.append(migration.version)
            await db.commit()
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await db.rollback()
            raise
    return applied
