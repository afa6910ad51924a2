"""`SqliteStore`: the embedded default backend, one SQLite file in WAL mode.

Semantics are exactly `InMemoryStore`'s; this module only decides how to get them from SQLite:

- Every read-check-write runs in a `BEGIN IMMEDIATE` transaction, which takes the database's write
  lock up front, so two connections (or processes) on one file serialize instead of interleaving.
  A partial unique index on `runs(thread_id) WHERE status = 'running'` is the last guard of "one
  running run per thread" whatever the code above it does.
- One aiosqlite connection (one thread) per store, guarded by an `asyncio.Lock`: without it two
  coroutines would interleave their statements inside one transaction, and a read would see
  another coroutine's uncommitted writes.
- `synchronous = NORMAL` in WAL mode: a commit is in the OS's hands when it returns, so it survives
  `kill -9` of the process (not a power cut, which would lose at most the last commits, never
  corrupt the file).
- The queue is ordered by `runs.seq` (the rowid), never by timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Literal, cast

import aiosqlite
import orjson

from runplane.core.clock import Clock, SystemClock, lease_deadline
from runplane.core.errors import (
    Conflict,
    InvalidInput,
    LeaseLost,
    NotFound,
    StoreUnavailable,
)
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    ThreadSettlement,
    admission_plan,
    can_transition,
    cancel_plan,
    check_transition,
    finish_plan,
    recovery_plan,
    thread_config_after_admission,
    webhook_payload,
    webhook_url,
)
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    Admission,
    CancelAction,
    CancelResult,
    Json,
    NewRun,
    NewThread,
    Outcome,
    QueueStats,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
    metadata_after_admission,
)
from runplane.core.store import Store, SupportsCheckpointerUrl
from runplane.stores.sqlite._codec import (
    dump_json,
    from_micros,
    load_json,
    opt_json,
    opt_micros,
    path_from_url,
    row_to_run,
    row_to_thread,
    to_micros,
    usage_params,
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
from runplane.stores.sqlite._thread_state import SqliteThreadState, check_thread_free

# `claim_run` updates whatever `claimable_run` picks, in the same statement.
_CLAIM_SQL = QUERIES["claim_run"].replace(":seq", "(" + QUERIES["claimable_run"].rstrip(";") + ")")

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


class SqliteStore(SqliteCronsAndWebhooks, SqliteResources, SqliteThreadState):
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
        self._lock = asyncio.Lock()
        self._db: aiosqlite.Connection | None = None

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
        if not apply_migrations:
            return
        try:
            await self.migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
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
        rows = await self._all(db, name, params, sql)
        return cast(sqlite3.Row, rows[0]) if rows else None

    def _now(self) -> int:
        return to_micros(self._clock.now())

    async def _owned_thread(self, db: aiosqlite.Connection, thread_id: str, owner: str) -> sqlite3.Row:
        row = await self._one(db, "get_thread", {"thread_id": thread_id})
        if row is None or row["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return row

    async def _owned_run(
        self, db: aiosqlite.Connection, run_id: str, owner: str, thread_id: str | None
    ) -> sqlite3.Row:
        row = await self._one(db, "get_run", {"run_id": run_id})
        if row is None or row["owner"] != owner or (thread_id is not None and row["thread_id"] != thread_id):
            raise NotFound(f"run {run_id} not found")
        return row

    async def _settle_thread(
        self, db: aiosqlite.Connection, thread_id: str, settlement: ThreadSettlement
    ) -> None:
        params = {"thread_id": thread_id, "outcome": settlement.status, "now": self._now()}
        await self._all(db, "settle_thread", params)
        if settlement.sets_error:
            await self._all(db, "set_thread_error", {"thread_id": thread_id, "error": settlement.error})

    async def _enqueue_webhook(self, db: aiosqlite.Connection, run: Run) -> None:
        """Put the run's webhook in the outbox, in the transaction that made it terminal."""
        url = webhook_url(run)
        if url is None:
            return
        row = await self._one(db, "thread_values", {"thread_id": run.thread_id})
        values = None if row is None or row["state_values"] is None else load_json(row["state_values"])
        params = {
            "delivery_id": str(uuid.uuid4()),
            "run_id": run.run_id,
            "url": url,
            "payload": dump_json(webhook_payload(run, values)),
            "now": self._now(),
        }
        await self._all(db, "insert_webhook", params)

    @staticmethod
    def _lease_lost(run_id: str, attempt: int) -> LeaseLost:
        return LeaseLost(f"run {run_id} attempt {attempt} no longer holds the lease")

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        thread_id = new.thread_id or str(uuid.uuid4())
        metadata = dump_json(new.metadata)
        async with self._write() as db:
            existing = await self._one(db, "get_thread", {"thread_id": thread_id})
            if existing is not None:
                if if_exists == "do_nothing" and existing["owner"] == new.owner:
                    return row_to_thread(existing)
                raise Conflict(f"thread {thread_id} already exists")
            params = {
                "thread_id": thread_id,
                "owner": new.owner,
                "status": "idle",
                "now": self._now(),
                "metadata": metadata,
            }
            row = await self._one(db, "insert_thread", params)
        assert row is not None
        return row_to_thread(row)

    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        async with self._session() as db:
            return row_to_thread(await self._owned_thread(db, thread_id, owner))

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        async with self._write() as db:
            thread = await self._owned_thread(db, thread_id, owner)
            merged = dump_json({**load_json(thread["metadata"]), **metadata})
            params = {"thread_id": thread_id, "metadata": merged, "now": self._now()}
            row = await self._one(db, "update_thread_metadata", params)
        assert row is not None
        return row_to_thread(row)

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
        async with self._write() as db:
            await self._owned_thread(db, thread_id, owner)
            row = await self._one(db, "set_thread_state", {**params, "now": self._now()})
        assert row is not None
        return row_to_thread(row)

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        async with self._write() as db:
            await self._owned_thread(db, thread_id, owner)
            rows = await self._all(db, "delete_thread_runs", {"thread_id": thread_id})
            await self._all(db, "delete_thread", {"thread_id": thread_id})
        rows.sort(key=lambda row: row["seq"])  # RETURNING has no order
        return [row_to_run(row) for row in rows if row["status"] in ACTIVE_RUN_STATUSES]

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

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> Admission:
        metadata = dump_json(new.metadata)
        kwargs = dump_json(new.kwargs)
        not_before = opt_micros(new.not_before)
        async with self._write() as db:
            if new.cron is not None:
                # In this transaction: the slot moves if and only if the run is admitted.
                await self._claim_slot(db, new.cron)
            if new.idempotency_key is not None:
                seen = await self._one(
                    db,
                    "get_run_by_idempotency_key",
                    {"owner": new.owner, "idempotency_key": new.idempotency_key},
                )
                if seen is not None:
                    if seen["fingerprint"] != new.fingerprint:
                        raise Conflict("idempotency key already used with a different payload")
                    return Admission(run=row_to_run(seen), replayed=True)
            if await self._one(db, "run_exists", {"run_id": new.run_id}) is not None:
                raise Conflict(f"run {new.run_id} already exists")
            now = self._now()
            thread = await self._one(db, "get_thread", {"thread_id": new.thread_id})
            if thread is None and new.if_not_exists == "create":
                params = {"thread_id": new.thread_id, "owner": new.owner, "status": "idle", "now": now}
                thread_metadata = dump_json(new.thread_metadata)
                thread = await self._one(db, "insert_thread", {**params, "metadata": thread_metadata})
            if thread is None or thread["owner"] != new.owner:
                raise NotFound(f"thread {new.thread_id} not found")
            check_thread_free(thread, now)

            active = {
                row["run_id"]: row for row in await self._all(db, "active_runs", {"thread_id": new.thread_id})
            }
            cancel_running, cancel_pending, action = admission_plan(
                new.multitask_strategy, [(run_id, row["status"]) for run_id, row in active.items()]
            )
            requested: list[Run] = []
            for run_id in cancel_running:
                # No row back: it already carries a rollback request, which is never downgraded.
                row = await self._one(
                    db, "request_cancel_running", {"run_id": run_id, "action": action, "now": now}
                )
                requested.append(row_to_run(row or active[run_id]))
            cancelled: list[Run] = []
            for run_id in cancel_pending:
                if action == "rollback":
                    row = await self._one(db, "delete_run", {"run_id": run_id})
                else:
                    row = await self._one(
                        db, "interrupt_pending", {"run_id": run_id, "action": action, "now": now}
                    )
                    assert row is not None
                    await self._enqueue_webhook(db, row_to_run(row))
                assert row is not None
                cancelled.append(row_to_run(row))

            await self._all(
                db,
                "insert_run",
                {
                    "run_id": new.run_id,
                    "thread_id": new.thread_id,
                    "assistant_id": new.assistant_id,
                    "owner": new.owner,
                    "multitask_strategy": new.multitask_strategy,
                    "now": now,
                    "metadata": metadata,
                    "kwargs": kwargs,
                    "not_before": not_before,
                    "idempotency_key": new.idempotency_key,
                    "fingerprint": new.fingerprint,
                },
            )
            if new.thread_config is not None:
                config = thread_config_after_admission(load_json(thread["config"]), new.thread_config)
                await self._all(
                    db, "set_thread_config", {"thread_id": new.thread_id, "config": dump_json(config)}
                )
            merged = metadata_after_admission(load_json(thread["metadata"]), new.thread_metadata_update)
            if merged is not None:
                params = {"thread_id": new.thread_id, "metadata": dump_json(merged), "now": now}
                await self._all(db, "update_thread_metadata", params)
            await self._all(db, "mark_thread_busy", {"thread_id": new.thread_id, "now": now})
        created = from_micros(now)
        run = Run(
            run_id=new.run_id,
            thread_id=new.thread_id,
            assistant_id=new.assistant_id,
            owner=new.owner,
            status="pending",
            multitask_strategy=new.multitask_strategy,
            created_at=created,
            updated_at=created,
            # Decoded from what was stored, so the caller gets what `get_run` would return.
            metadata=load_json(metadata),
            kwargs=load_json(kwargs),
            not_before=None if not_before is None else from_micros(not_before),
            idempotency_key=new.idempotency_key,
        )
        return Admission(run, tuple(requested), tuple(cancelled))

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async with self._session() as db:
            return row_to_run(await self._owned_run(db, run_id, owner, thread_id))

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        params: dict[str, Any] = {"thread_id": thread_id, "limit": filter.limit, "offset": filter.offset}
        async with self._session() as db:
            await self._owned_thread(db, thread_id, owner)
            if filter.status is None:
                rows = await self._all(db, "list_runs", params)
            else:
                rows = await self._all(db, "list_runs_by_status", {**params, "status": filter.status})
        return [row_to_run(row) for row in rows]

    async def request_cancel(
        self, run_id: str, owner: str, action: CancelAction, thread_id: str | None = None
    ) -> CancelResult:
        async with self._write() as db:
            run = row_to_run(await self._owned_run(db, run_id, owner, thread_id))
            plan = cancel_plan(run.status, run.cancel_action, action)
            params = {"run_id": run_id, "action": plan.cancel_action, "now": self._now()}
            if plan.step == "delete":
                await self._all(db, "delete_run", {"run_id": run_id})
            elif plan.step == "interrupt":
                run = row_to_run(_written(await self._one(db, "interrupt_pending", params)))
            elif plan.step == "request" and plan.cancel_action is not None:
                run = row_to_run(_written(await self._one(db, "request_cancel_running", params)))
            if plan.thread is not None:
                await self._settle_thread(db, run.thread_id, plan.thread)
            if plan.webhook_due:
                await self._enqueue_webhook(db, run)
            return CancelResult(run, settled=plan.settled, deleted=plan.step == "delete")

    async def delete_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async with self._write() as db:
            run = row_to_run(await self._owned_run(db, run_id, owner, thread_id))
            if run.status == "running":
                raise Conflict(f"run {run_id} is running; cancel it first")
            await self._all(db, "delete_run", {"run_id": run_id})
            if run.status == "pending":
                await self._settle_thread(db, run.thread_id, QUEUE_LEFT)
            return run

    # -- workers --------------------------------------------------------------------------------

    async def claim_run(self, worker_id: str, lease_seconds: float) -> Run | None:
        # An idle worker polls often: look without the write lock first, so empty polls never
        # block writers. "Nothing claimable" seen then is a valid answer for this call.
        async with self._session() as db:
            if await self._one(db, "claimable_run", {"now": self._now()}) is None:
                return None
        async with self._write() as db:
            now = self._now()
            params = {
                "now": now,
                "worker_id": worker_id,
                "lease_expires_at": to_micros(lease_deadline(self._clock, lease_seconds)),
            }
            row = await self._one(db, "claim_run", params, _CLAIM_SQL)
            if row is None:
                return None  # another connection took it between the look and the lock
            check_transition(row["run_id"], "pending", "running")
            await self._all(db, "mark_thread_busy", {"thread_id": row["thread_id"], "now": now})
        return row_to_run(row)

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        params = {
            "run_id": run_id,
            "attempt": attempt,
            "worker_id": worker_id,
            "lease_expires_at": to_micros(lease_deadline(self._clock, lease_seconds)),
        }
        # One conditional UPDATE is atomic on its own; no read-check-write, no explicit transaction.
        async with self._session() as db:
            row = await self._one(db, "renew_lease", params)
        if row is None:
            raise self._lease_lost(run_id, attempt)
        return cast(CancelAction | None, row["cancel_action"])

    @contextlib.asynccontextmanager
    async def hold_attempt(self, run_id: str, attempt: int, max_seconds: float) -> AsyncIterator[None]:
        # A check only: holding this connection's write lock would block the checkpointer's own
        # connection to the same file until its busy timeout.
        async with self._session() as db:
            held = await self._one(db, "get_held_run", {"run_id": run_id, "attempt": attempt})
        if held is None:
            raise self._lease_lost(run_id, attempt)
        yield

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        params = {"run_id": run_id, "attempt": attempt, "model_name": model_name, **usage_params(usage)}
        async with self._session() as db:
            row = await self._one(db, "record_progress", {**params, "now": self._now()})
        if row is None:
            raise self._lease_lost(run_id, attempt)

    async def finish_run(self, run_id: str, attempt: int, outcome: Outcome) -> Run:
        values = opt_json(outcome.thread_values)
        interrupts = dump_json(outcome.thread_interrupts)
        async with self._write() as db:
            now = self._now()
            row = None
            if can_transition("running", outcome.status):
                params = {
                    "run_id": run_id,
                    "attempt": attempt,
                    "status": outcome.status,
                    "error": outcome.error,
                    "model_name": outcome.model_name,
                    "now": now,
                    **usage_params(outcome.usage),
                }
                row = await self._one(db, "finish_run", params)
            if row is None:
                # Tell why, in the reference's order: lease, then cancel, then transition.
                held = await self._one(db, "get_held_run", {"run_id": run_id, "attempt": attempt})
                if held is None:
                    raise self._lease_lost(run_id, attempt)
                finish_plan(run_id, held["status"], held["cancel_action"], outcome)  # raises why
                raise AssertionError("unreachable: finish_run matched no row for a held run")
            # The conditional update above checked the plan's preconditions in SQL.
            settlement = finish_plan(run_id, "running", None, outcome)
            params = {
                "thread_id": row["thread_id"],
                "outcome": settlement.status,
                "values": values,
                "interrupts": interrupts,
                "error": settlement.error,
                "now": now,
            }
            await self._all(db, "finish_thread", params)
            await self._enqueue_webhook(db, row_to_run(row))
        return row_to_run(row)

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        async with self._write() as db:
            row = await self._one(db, "discard_run", {"run_id": run_id, "attempt": attempt})
            if row is None:
                raise self._lease_lost(run_id, attempt)
            # A rolled-back run leaves no trace, so the thread is as if it never ran: its error stays.
            await self._settle_thread(db, row["thread_id"], QUEUE_LEFT)
        return row_to_run(row)

    async def release_run(self, run_id: str, attempt: int) -> Run:
        async with self._session() as db:
            row = await self._one(
                db, "release_run", {"run_id": run_id, "attempt": attempt, "now": self._now()}
            )
        if row is None:
            raise self._lease_lost(run_id, attempt)
        return row_to_run(row)

    async def queue_stats(self) -> QueueStats:
        async with self._session() as db:
            row = await self._one(db, "queue_stats", {})
        assert row is not None  # an aggregate always has a row
        return QueueStats(
            pending=row["pending"] or 0, running=row["running"] or 0, busy_workers=row["busy_workers"] or 0
        )

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        async with self._session() as db:
            rows = await self._all(db, "expired_runs", {"now": self._now(), "limit": limit})
        return [row_to_run(row) for row in rows]

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        async with self._write() as db:
            held = await self._one(db, "get_held_run", {"run_id": run_id, "attempt": attempt})
            if held is None:
                raise self._lease_lost(run_id, attempt)
            plan = recovery_plan(row_to_run(held), max_attempts, self._clock.now())
            now = self._now()
            params = {
                "run_id": run_id,
                "attempt": attempt,
                "now": now,
                "status": plan.status,
                "error": plan.error,
                "ended_at": now if plan.ends_run else None,
            }
            row = await self._one(db, "recover_run", params)
            assert row is not None
            if plan.thread is not None:
                await self._settle_thread(db, row["thread_id"], plan.thread)
                await self._enqueue_webhook(db, row_to_run(row))
        return row_to_run(row)


def _written(row: sqlite3.Row | None) -> sqlite3.Row:
    """The row an update of a run locked by this write transaction returned (it always matches)."""
    assert row is not None
    return row


def _conforms(store: SqliteStore) -> tuple[Store, SupportsCheckpointerUrl]:
    """Never called: mypy checks here that `SqliteStore` implements the protocols."""
    return store, store
