"""`SqliteStore`: the embedded default backend, one SQLite file in WAL mode.

Semantics are exactly `InMemoryStore`'s; this module only decides how to get them from SQLite:

- Every read-check-write runs in a `BEGIN IMMEDIATE` transaction, which takes the database's write
  lock up front, so two connections (or processes) on one file serialize instead of interleaving.
  A partial unique index on `runs(thread_id) WHERE status = 'running'` is the last guard of "one
  running run per thread" whatever the code above it does.
- One aiosqlite connection (one thread) per store, guarded by an `asyncio.Lock` (a counting
  `ConnectionLock`): without it two coroutines would interleave their statements inside one
  transaction, and a read would see another coroutine's uncommitted writes. The hot paths run
  each transaction as one function on that thread (`_transactions`), and the transactions of
  concurrent callers in one hop and one COMMIT (`runplane.db.sqlite_writer.GroupCommit`, shared
  with the checkpointer on this file): each caller answered after the COMMIT that holds its
  writes; while the connection is idle, on the event loop's own thread, without a hop
  (`runplane.db.sqlite_inline`).
- The parts: threads here, runs and the worker's side in `_runs`, crons and the webhook outbox
  in `_crons`, assistants and thread TTLs in `_resources`.
- `synchronous = NORMAL` in WAL mode: a commit is in the OS's hands when it returns, so it survives
  `kill -9` of the process (not a power cut, which would lose at most the last commits, never
  corrupt the file).
- The queue is ordered by `runs.seq` (the rowid), never by timestamps.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, cast

import aiosqlite
import orjson

from runplane.core.clock import Clock, SystemClock
from runplane.core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    Json,
    NewThread,
    Run,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
)
from runplane.core.store import Store, SupportsCheckpointerUrl
from runplane.db.sqlite_inline import ConnectionLock
from runplane.db.sqlite_writer import GroupCommit, share, unshare
from runplane.stores.sqlite._codec import (
    dump_json,
    load_json,
    opt_json,
    path_from_url,
    row_to_run,
    row_to_thread,
)
from runplane.stores.sqlite._connection import (
    DEFAULT_BUSY_TIMEOUT_MS,
    QUERIES,
    apply_migrations,
    connect,
    fetch_all,
    translate_errors,
)
from runplane.stores.sqlite._crons import SqliteCronsAndWebhooks
from runplane.stores.sqlite._resources import SqliteResources
from runplane.stores.sqlite._runs import SqliteRuns
from runplane.stores.sqlite._thread_state import SqliteThreadState
from runplane.stores.sqlite._transactions import owned_thread, row, rows, written

_SORT_COLUMNS = ("thread_id", "status", "created_at", "updated_at")
_SEARCH_SQL = {
    (column, order): QUERIES["search_threads"].replace(
        "{order}",
        f"{column} {order.upper()}" + ("" if column == "thread_id" else f", thread_id {order.upper()}"),
    )
    for column in _SORT_COLUMNS
    for order in ("asc", "desc")
}

Params = Mapping[str, Any]


class SqliteStore(SqliteRuns, SqliteCronsAndWebhooks, SqliteResources, SqliteThreadState):
    """Threads and runs in one SQLite file shared by every process of a deployment.

    Args:
        path: the database file, or ":memory:" (one connection, so one store, sees it).
        clock: time source; a `FakeClock` in tests.
        busy_timeout_ms: how long to wait for another connection's write lock.
    """

    def __init__(
        self,
        path: str = "runplane.db",
        *,
        clock: Clock | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        self._path = path
        self._clock = clock or SystemClock()
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._lock = ConnectionLock()  # counted: the writer's proof the connection is idle
        self._db: aiosqlite.Connection | None = None
        self._writer = GroupCommit(lambda: self._db, self._lock)
        self._fresh_leases: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> SqliteStore:
        """A store for `sqlite:///relative.db`, `sqlite:////abs/path.db` or `sqlite:///:memory:`."""
        return cls(path_from_url(url), clock=clock)

    @property
    def path(self) -> str:
        """The database file, or ":memory:"."""
        return self._path

    @property
    def checkpointer_url(self) -> str:
        """What `AsyncSqliteSaver.from_conn_string` takes to share this database: the file path.

        LangGraph's checkpoint tables (`checkpoints`, `writes`) live beside ours in the same file;
        neither side touches the other's tables. An in-memory database cannot be shared.
        """
        return self._path

    def __repr__(self) -> str:
        return f"SqliteStore(path={self._path!r}, open={self._db is not None})"

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self, *, apply_migrations: bool = True) -> None:
        """Connect, set the connection's pragmas and apply pending migrations.

        Args:
            apply_migrations: False leaves the schema as it is (migration tests, `migrate()` later).
        """
        if self._db is not None:
            return
        with translate_errors():
            db = await connect(self._path, self._busy_timeout_ms)
        self._db = db
        share(self._path, self._writer)
        if not apply_migrations:
            return
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        unshare(self._path, self._writer)
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                with translate_errors():
                    await db.close()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def migrate(self, target: int | None = None) -> list[int]:
        """Apply pending migrations (up to version `target`), each in its own transaction.

        Safe to run from several processes at once: each migration re-checks the version table
        under the write lock, so it is applied exactly once.

        Returns:
            The versions this call applied (empty when the schema was current).
        """
        async with self._session() as db:
            return await apply_migrations(db, self._now(), target)

    # -- plumbing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosqlite.Connection]:
        """Exclusive use of the connection, with driver errors translated."""
        async with self._lock:
            db = self._db
            if db is None:
                raise StoreUnavailable("the SQLite store is not open")
            with translate_errors():
                yield db

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A `BEGIN IMMEDIATE` transaction: committed on success, rolled back on any exception."""
        async with self._session() as db:
            try:
                # BEGIN and COMMIT are inside the try: if a cancellation lands while either is
                # queued, the rollback (a no-op outside a transaction) still leaves the connection
                # clean for the next caller.
                await fetch_all(db, QUERIES["begin_immediate"], {})
                yield db
                await db.commit()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.rollback()
                raise

    @staticmethod
    async def _all(db: aiosqlite.Connection, name: str, params: Params, sql: str | None = None) -> list[Any]:
        return await fetch_all(db, sql or QUERIES[name], params)

    async def _one(
        self, db: aiosqlite.Connection, name: str, params: Params, sql: str | None = None
    ) -> sqlite3.Row | None:
        found = await self._all(db, name, params, sql)
        return cast(sqlite3.Row, found[0]) if found else None

    async def _owned_thread(self, db: aiosqlite.Connection, thread_id: str, owner: str) -> sqlite3.Row:
        found = await self._one(db, "get_thread", {"thread_id": thread_id})
        if found is None or found["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return found

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        thread_id = new.thread_id or str(uuid.uuid4())
        metadata = dump_json(new.metadata)

        def create(conn: sqlite3.Connection) -> sqlite3.Row:
            existing = row(conn, "get_thread", {"thread_id": thread_id})
            if existing is not None:
                if if_exists == "do_nothing" and existing["owner"] == new.owner:
                    return existing
                raise Conflict(f"thread {thread_id} already exists")
            params = {"thread_id": thread_id, "owner": new.owner, "status": "idle", "now": self._now()}
            return written(row(conn, "insert_thread", {**params, "metadata": metadata}))

        return row_to_thread(await self._transact(create))

    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        return row_to_thread(await self._read(lambda conn: owned_thread(conn, thread_id, owner)))

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        def update(conn: sqlite3.Connection) -> sqlite3.Row:
            thread = owned_thread(conn, thread_id, owner)
            merged = dump_json({**load_json(thread["metadata"]), **metadata})
            params = {"thread_id": thread_id, "metadata": merged, "now": self._now()}
            return written(row(conn, "update_thread_metadata", params))

        return row_to_thread(await self._transact(update))

    async def set_thread_state(
        self,
        thread_id: str,
        owner: str,
        values: Json | None,
        interrupts: Json,
        status: ThreadStatus | None = None,
    ) -> Thread:
        params = {
            "thread_id": thread_id,
            "values": opt_json(values),
            "interrupts": dump_json(interrupts),
            "status": status,
        }

        def set_state(conn: sqlite3.Connection) -> sqlite3.Row:
            owned_thread(conn, thread_id, owner)
            return written(row(conn, "set_thread_state", {**params, "now": self._now()}))

        return row_to_thread(await self._transact(set_state))

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        def delete(conn: sqlite3.Connection) -> list[Any]:
            owned_thread(conn, thread_id, owner)
            deleted = rows(conn, "delete_thread_runs", {"thread_id": thread_id})
            for found in deleted:  # before the commit: a fence check from now on asks the database
                self._forget_lease(found["run_id"])
            rows(conn, "delete_thread", {"thread_id": thread_id})
            return deleted

        deleted = await self._transact(delete)
        deleted.sort(key=lambda found: found["seq"])  # RETURNING has no order
        return [row_to_run(found) for found in deleted if found["status"] in ACTIVE_RUN_STATUSES]

    @staticmethod
    def _thread_filter_params(owner: str, filter: ThreadFilter) -> dict[str, Any]:
        return {
            "owner": owner,
            "status": filter.status,
            "ids": None if filter.ids is None else orjson.dumps(list(filter.ids)).decode(),
            "metadata": dump_json(filter.metadata) if filter.metadata else None,
        }

    async def search_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]:
        sql = _SEARCH_SQL.get((filter.sort_by, filter.sort_order))
        if sql is None:
            raise InvalidInput(f"cannot sort threads by {filter.sort_by!r} {filter.sort_order!r}")
        params = {**self._thread_filter_params(owner, filter), "limit": filter.limit, "offset": filter.offset}
        async with self._session() as db:
            rows = await self._all(db, "search_threads", params, sql)
        return [row_to_thread(row) for row in rows]

    async def count_threads(self, owner: str, filter: ThreadFilter) -> int:
        async with self._session() as db:
            row = await self._one(db, "count_threads", self._thread_filter_params(owner, filter))
        assert row is not None
        return int(row[0])

    async def thread_usage(self, thread_id: str, owner: str) -> TokenUsage:
        async with self._session() as db:
            row = await self._one(db, "thread_usage", {"thread_id": thread_id, "owner": owner})
        if row is None:
            raise NotFound(f"thread {thread_id} not found")
        return TokenUsage(int(row["input_tokens"]), int(row["output_tokens"]), int(row["total_tokens"]))


def _conforms(store: SqliteStore) -> tuple[Store, SupportsCheckpointerUrl]:
    """Never called: mypy checks here that `SqliteStore` implements the protocols."""
    return store, store
