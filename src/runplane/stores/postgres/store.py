"""`PostgresStore`: threads and runs in PostgreSQL, shared safely by many processes.

The in-memory reference gets its atomicity from one lock; here the database provides it:

- Every transaction that changes which runs of a thread are pending or running first locks the
  thread row (`SELECT ... FOR UPDATE`). Admissions, claims, cancels and settlements of one thread are
  therefore serialized across processes, and they always lock the thread before its runs, so they
  cannot deadlock. A partial unique index (one `running` run per thread) is the last guard.
- `threads.queue_seq` is the admission sequence of the thread's next claimable run (its oldest
  pending run; NULL while one of its runs is running). It is rewritten under the thread lock by
  every such transaction, so a claim is one short index scan over threads in queue order that skips
  threads another claimer or admission holds (`FOR UPDATE SKIP LOCKED`), however many runs wait
  behind running ones.
- Worker writes are fenced in SQL by `status = 'running' AND attempt = %s`.
- Times come from the injected clock as parameters, never from `now()`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runplane.core.clock import Clock, SystemClock, lease_deadline
from runplane.core.errors import (
    Conflict,
    LeaseLost,
    NotFound,
    SlotTaken,
    StoreUnavailable,
)
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    ThreadSettlement,
    admission_plan,
    cancel_plan,
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
from runplane.db.postgres import (
    GuardedPool,
    PoolSettings,
    breaker_for,
    parse_url,
    retryable,
    translate_errors,
)
from runplane.db.sql import Migration, load_migrations, load_queries
from runplane.stores.postgres._crons import PostgresCronsAndWebhooks, lock_cron_slot
from runplane.stores.postgres._resources import PostgresResources
from runplane.stores.postgres._rows import (
    Conn,
    fetch_all,
    fetch_one,
    held_row,
    lease_lost,
    run_from_row,
    runs_in_order,
    thread_from_row,
    usage_params,
)
from runplane.stores.postgres._thread_state import PostgresThreadState, check_thread_free

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PACKAGE = "runplane.stores.postgres"
QUERIES = load_queries(_PACKAGE)
MIGRATIONS = load_migrations(_PACKAGE)

#: `pg_advisory_xact_lock` key that serializes migrations ("runplane" in ASCII).
MIGRATION_LOCK_KEY = int.from_bytes(b"runplane", "big")

#: Transactions retried after a deadlock, a serialization failure or a lost insert race.
_MAX_ATTEMPTS = 5

#: The whitelisted ORDER BY clauses of `search_threads`: text sorts use code points, as Python does.
_SORT_COLUMNS = {
    "thread_id": 'thread_id COLLATE "C"',
    "status": 'status COLLATE "C"',
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_SEARCH_QUERIES = {
    (sort_by, order): QUERIES["search_threads"].replace(
        "__ORDER_BY__", f'{column} {order.upper()}, thread_id COLLATE "C" {order.upper()}'
    )
    for (sort_by, column), order in itertools.product(_SORT_COLUMNS.items(), ("asc", "desc"))
}


async def _one(conn: Conn, name: str, /, **params: Any) -> DictRow | None:
    return await fetch_one(conn, QUERIES[name], **params)


async def _exec(conn: Conn, name: str, /, **params: Any) -> None:
    await conn.execute(QUERIES[name], params)


async def _all(conn: Conn, name: str, /, **params: Any) -> list[DictRow]:
    return await fetch_all(conn, QUERIES[name], **params)


def _filter_params(owner: str, filter: ThreadFilter) -> dict[str, Any]:
    return {
        "owner": owner,
        "ids": list(filter.ids) if filter.ids is not None else None,
        "status": filter.status,
        "metadata": Jsonb(filter.metadata),
    }


# -- the store ------------------------------------------------------------------------------------


class PostgresStore(PostgresCronsAndWebhooks, PostgresResources, PostgresThreadState):
    """Threads, runs and the run queue in PostgreSQL (psycopg 3, async pool).

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

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock | None = None, min_size: int | None = None, max_size: int | None = None
    ) -> PostgresStore:
        """A store for `postgresql://user@host:port/db?pool_min_size=1&pool_max_size=10` (not opened).

        Keyword sizes override the URL's.
        """
        conninfo, settings = parse_url(url)
        if min_size is not None or max_size is not None:
            settings = PoolSettings(
                min_size=settings.min_size if min_size is None else min_size,
                max_size=settings.max_size if max_size is None else max_size,
                timeout=settings.timeout,
            )
        return cls(conninfo, clock=clock, pool=settings)

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

    async def __aenter__(self) -> PostgresStore:
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
            if await self._transaction(functools.partial(self._apply, migration=migration)):
                applied.append(migration.version)
        return applied

    async def _apply(self, conn: Conn, *, migration: Migration) -> bool:
        await _exec(conn, "migration_lock", key=MIGRATION_LOCK_KEY)
        await _exec(conn, "create_migrations_table")
        if await _one(conn, "migration_applied", version=migration.version):
            return False
        await conn.execute(migration.sql)
        await _exec(
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
            return [row["version"] for row in await _all(conn, "applied_migrations")]

    # -- plumbing -------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A pooled connection (autocommit) for reads; errors are translated."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        with translate_errors():
            async with self._pool.connection() as conn:
                yield conn

    async def _transaction(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `body` in one transaction, again after a deadlock or a lost insert race."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        with translate_errors():
            for attempt in itertools.count(1):
                try:
                    async with self._pool.connection() as conn, conn.transaction():
                        return await body(conn)
                except psycopg.Error as exc:
                    if attempt >= _MAX_ATTEMPTS or not retryable(exc):
                        raise
                    logger.debug("retrying a transaction after %s", type(exc).__name__)
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
    ) -> None:
        """Recompute a locked thread's queue head; with an `outcome`, its status too (busy while a run
        is active, else the outcome)."""
        await _exec(
            conn,
            "settle_thread",
            thread_id=thread_id,
            outcome=outcome,
            now=self._clock.now() if touch else None,
            set_values=values is not None,
            values=Jsonb(values) if values is not None else None,
            interrupts=Jsonb(interrupts) if interrupts is not None else None,
        )

    async def _settle_with(
        self,
        conn: Conn,
        thread_id: str,
        settlement: ThreadSettlement,
        *,
        values: Json | None = None,
        interrupts: Json | None = None,
    ) -> None:
        """Apply a lifecycle plan's `settlement` to a locked thread."""
        await self._settle(conn, thread_id, settlement.status, values=values, interrupts=interrupts)
        if settlement.sets_error:
            await _exec(conn, "set_thread_error", thread_id=thread_id, error=settlement.error)

    async def _lock_run(self, conn: Conn, run_id: str) -> DictRow | None:
        """Lock a run's thread, then the run; None when the run does not exist."""
        if await _one(conn, "lock_thread_of_run", run_id=run_id) is None:
            return None
        return await _one(conn, "get_run_for_update", run_id=run_id)

    async def _lock_owned_run(self, conn: Conn, run_id: str, owner: str, thread_id: str | None) -> DictRow:
        row = await self._lock_run(conn, run_id)
        if row is None or row["owner"] != owner or (thread_id is not None and row["thread_id"] != thread_id):
            raise NotFound(f"run {run_id} not found")
        return row

    async def _lock_owned_thread(self, conn: Conn, thread_id: str, owner: str) -> DictRow:
        row = await _one(conn, "lock_thread", thread_id=thread_id)
        if row is None or row["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return row

    async def _owned_thread(self, conn: Conn, thread_id: str, owner: str) -> DictRow:
        row = await _one(conn, "get_thread", thread_id=thread_id)
        if row is None or row["owner"] != owner:
            raise NotFound(f"thread {thread_id} not found")
        return row

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        thread_id = new.thread_id or str(uuid.uuid4())

        async def body(conn: Conn) -> Thread:
            params = {"thread_id": thread_id, "owner": new.owner, "now": self._clock.now()}
            row = await _one(conn, "insert_thread", metadata=Jsonb(new.metadata), **params)
            if row is not None:
                return thread_from_row(row)
            existing = await _one(conn, "get_thread", thread_id=thread_id)
            if existing is not None and if_exists == "do_nothing" and existing["owner"] == new.owner:
                return thread_from_row(existing)
            raise Conflict(f"thread {thread_id} already exists")

        return await self._transaction(body)

    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        async with self._connection() as conn:
            return thread_from_row(await self._owned_thread(conn, thread_id, owner))

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        async with self._connection() as conn:
            row = await _one(
                conn,
                "update_thread_metadata",
                thread_id=thread_id,
                owner=owner,
                metadata=Jsonb(metadata),
                now=self._clock.now(),
            )
        if row is None:
            raise NotFound(f"thread {thread_id} not found")
        return thread_from_row(row)

    async def set_thread_state(
        self,
        thread_id: str,
        owner: str,
        values: Json | None,
        interrupts: Json,
        status: ThreadStatus | None = None,
    ) -> Thread:
        async def body(conn: Conn) -> Thread:
            # Locked first: the next statement then sees every run admitted before it.
            await self._lock_owned_thread(conn, thread_id, owner)
            row = await _one(
                conn,
                "set_thread_state",
                thread_id=thread_id,
                values=Jsonb(values) if values is not None else None,
                interrupts=Jsonb(interrupts),
                status=status,
                now=self._clock.now(),
            )
            assert row is not None  # the thread is locked
            return thread_from_row(row)

        return await self._transaction(body)

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        async def body(conn: Conn) -> list[Run]:
            await self._lock_owned_thread(conn, thread_id, owner)
            runs = runs_in_order(await _all(conn, "delete_thread_runs", thread_id=thread_id))
            await _exec(conn, "delete_thread", thread_id=thread_id)
            return [run for run in runs if run.status in ACTIVE_RUN_STATUSES]

        return await self._transaction(body)

    async def search_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]:
        query = _SEARCH_QUERIES[filter.sort_by, filter.sort_order]
        async with self._connection() as conn:
            rows = await fetch_all(
                conn, query, limit=filter.limit, offset=filter.offset, **_filter_params(owner, filter)
            )
        return [thread_from_row(row) for row in rows]

    async def count_threads(self, owner: str, filter: ThreadFilter) -> int:
        async with self._connection() as conn:
            row = await _one(conn, "count_threads", **_filter_params(owner, filter))
        assert row is not None
        return int(row["n"])

    async def thread_usage(self, thread_id: str, owner: str) -> TokenUsage:
        async with self._connection() as conn:
            await self._owned_thread(conn, thread_id, owner)
            row = await _one(conn, "thread_usage", thread_id=thread_id)
        assert row is not None
        return TokenUsage(int(row["input_tokens"]), int(row["output_tokens"]), int(row["total_tokens"]))

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> Admission:
        # A lost race on the idempotency key or the thread insert is retried by `_transaction`:
        # the next attempt sees the winner and replays or conflicts like the reference.
        return await self._transaction(lambda conn: self._admit_fired(conn, new))

    async def _admit_fired(self, conn: Conn, new: NewRun) -> Admission:
        if new.cron is not None and not await lock_cron_slot(conn, new.cron, self._clock.now()):
            raise SlotTaken(f"cron {new.cron.cron_id} slot {new.cron.slot.isoformat()} is taken")
        # Same transaction: the slot moves if and only if the run is admitted.
        return await self._admit(conn, new)

    async def _enqueue_webhook(self, conn: Conn, run: Run) -> None:
        """Put the run's webhook in the outbox, in the transaction that made it terminal."""
        url = webhook_url(run)
        if url is None:
            return
        thread = await _one(conn, "thread_values", thread_id=run.thread_id)
        values = None if thread is None else thread["state_values"]
        await _exec(
            conn,
            "insert_webhook",
            delivery_id=str(uuid.uuid4()),
            run_id=run.run_id,
            url=url,
            payload=Jsonb(webhook_payload(run, values)),
            now=self._clock.now(),
        )

    async def _admit(self, conn: Conn, new: NewRun) -> Admission:
        now = self._clock.now()
        probe = await _all(
            conn, "admission_probe", run_id=new.run_id, owner=new.owner, idempotency_key=new.idempotency_key
        )
        for row in probe:
            if row["idempotent"]:
                if row["fingerprint"] != new.fingerprint:
                    raise Conflict("idempotency key already used with a different payload")
                return Admission(run=run_from_row(row), replayed=True)
        if probe:
            raise Conflict(f"run {new.run_id} already exists")
        if new.if_not_exists == "create":
            metadata = Jsonb(new.thread_metadata)
            await _exec(
                conn, "insert_thread", thread_id=new.thread_id, owner=new.owner, now=now, metadata=metadata
            )
        thread = await _one(conn, "lock_thread", thread_id=new.thread_id)
        if thread is None or thread["owner"] != new.owner:
            raise NotFound(f"thread {new.thread_id} not found")
        check_thread_free(thread, now)

        active = await _all(conn, "active_runs", thread_id=new.thread_id)
        cancel_running, cancel_pending, action = admission_plan(
            new.multitask_strategy, [(row["run_id"], row["status"]) for row in active]
        )
        requested: list[Run] = []
        if cancel_running:
            await _exec(conn, "request_cancel", run_ids=cancel_running, action=action, now=now)
            requested = runs_in_order(await _all(conn, "get_runs", run_ids=cancel_running))
        cancelled: list[Run] = []
        if cancel_pending:
            if action == "rollback":
                rows = await _all(conn, "delete_runs", run_ids=cancel_pending)
            else:
                rows = await _all(conn, "interrupt_pending", run_ids=cancel_pending, action=action, now=now)
            cancelled = runs_in_order(rows)
            if action != "rollback":
                for run in cancelled:
                    await self._enqueue_webhook(conn, run)

        inserted = await _one(
            conn,
            "insert_run",
            run_id=new.run_id,
            thread_id=new.thread_id,
            assistant_id=new.assistant_id,
            owner=new.owner,
            multitask_strategy=new.multitask_strategy,
            now=now,
            metadata=Jsonb(new.metadata),
            kwargs=Jsonb(new.kwargs),
            not_before=new.not_before,
            idempotency_key=new.idempotency_key,
            fingerprint=new.fingerprint,
        )
        assert inserted is not None
        if new.thread_config is not None:
            config = thread_config_after_admission(thread["config"], new.thread_config)
            await _exec(conn, "set_thread_config", thread_id=new.thread_id, config=Jsonb(config))
        if metadata_after_admission(thread["metadata"], new.thread_metadata_update) is not None:
            # Under the thread lock already held: a second lock after the wake-up would make the
            # claim's SKIP LOCKED pass this thread over (issue 18).
            update = {"thread_id": new.thread_id, "owner": new.owner, "now": now}
            await _exec(conn, "update_thread_metadata", metadata=Jsonb(new.thread_metadata_update), **update)
        await self._settle(conn, new.thread_id, "busy")
        return Admission(run_from_row(inserted), tuple(requested), tuple(cancelled))

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async with self._connection() as conn:
            row = await _one(conn, "get_run", run_id=run_id, owner=owner, thread_id=thread_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return run_from_row(row)

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        async with self._connection() as conn:
            await self._owned_thread(conn, thread_id, owner)
            rows = await _all(
                conn,
                "list_runs",
                thread_id=thread_id,
                status=filter.status,
                limit=filter.limit,
                offset=filter.offset,
            )
        return [run_from_row(row) for row in rows]

    async def request_cancel(
        self, run_id: str, owner: str, action: CancelAction, thread_id: str | None = None
    ) -> CancelResult:
        async def body(conn: Conn) -> CancelResult:
            run = run_from_row(await self._lock_owned_run(conn, run_id, owner, thread_id))
            plan = cancel_plan(run.status, run.cancel_action, action)
            ids = [run_id]
            if plan.step == "delete":
                await _exec(conn, "delete_runs", run_ids=ids)
            elif plan.step == "interrupt":
                rows = await _all(
                    conn, "interrupt_pending", run_ids=ids, action=plan.cancel_action, now=self._clock.now()
                )
                run = run_from_row(rows[0])
            elif plan.step == "request" and plan.cancel_action is not None:
                await _exec(
                    conn, "request_cancel", run_ids=ids, action=plan.cancel_action, now=self._clock.now()
                )
                run = run_from_row(_locked(await _one(conn, "get_run_for_update", run_id=run_id)))
            if plan.thread is not None:
                await self._settle_with(conn, run.thread_id, plan.thread)
            if plan.webhook_due:
                await self._enqueue_webhook(conn, run)
            return CancelResult(run, settled=plan.settled, deleted=plan.step == "delete")

        return await self._transaction(body)

    async def delete_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async def body(conn: Conn) -> Run:
            row = await self._lock_owned_run(conn, run_id, owner, thread_id)
            if row["status"] == "running":
                raise Conflict(f"run {run_id} is running; cancel it first")
            await _exec(conn, "delete_runs", run_ids=[run_id])
            if row["status"] == "pending":
                await self._settle_with(conn, row["thread_id"], QUEUE_LEFT)
            return run_from_row(row)

        return await self._transaction(body)

    # -- workers --------------------------------------------------------------------------------

    async def claim_run(self, worker_id: str, lease_seconds: float) -> Run | None:
        async def body(conn: Conn) -> Run | None:
            now = self._clock.now()
            head = await _one(conn, "claim_next_thread", now=now)
            if head is None:
                return None
            thread_id = head["thread_id"]
            # A new statement, so it reads the queue head as committed before we locked the thread.
            row = await _one(
                conn,
                "claim_run",
                thread_id=thread_id,
                worker_id=worker_id,
                lease_expires_at=lease_deadline(self._clock, lease_seconds),
                now=now,
            )
            if row is None:
                raise _HeadMoved()
            await self._settle(conn, thread_id, "busy")
            return run_from_row(row)

        for _ in range(_MAX_ATTEMPTS):
            try:
                return await self._transaction(body)
            except _HeadMoved:
                continue  # the queue changed between the scan and the lock; look again
        return None

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        async with self._connection() as conn:
            row = await _one(
                conn,
                "renew_lease",
                run_id=run_id,
                attempt=attempt,
                worker_id=worker_id,
                lease_expires_at=lease_deadline(self._clock, lease_seconds),
            )
        if row is None:
            raise lease_lost(run_id, attempt)
        action: CancelAction | None = row["cancel_action"]
        return action

    @contextlib.asynccontextmanager
    async def hold_attempt(self, run_id: str, attempt: int, max_seconds: float) -> AsyncIterator[None]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        async with contextlib.AsyncExitStack() as stack:
            # Only the store's own statements are translated: errors of the fenced write are not ours.
            with translate_errors():
                conn = await stack.enter_async_context(self._pool.connection())
                await stack.enter_async_context(conn.transaction())
                timeout_ms = str(max(1, round(max_seconds * 1000)))
                held = await _one(conn, "hold_attempt", run_id=run_id, attempt=attempt, timeout_ms=timeout_ms)
            if held is None:
                raise lease_lost(run_id, attempt)
            yield
            try:
                await stack.aclose()  # commit: releases the lock
            except pg_errors.IdleInTransactionSessionTimeout as exc:
                # PostgreSQL ended the session: the holder stalled past `max_seconds`, and the run
                # may have been recovered meanwhile.
                raise LeaseLost(f"run {run_id} attempt {attempt} lost its hold: {exc}") from exc
            except psycopg.Error as exc:
                # The server went away (a restart, a network cut): an infrastructure fault. The
                # worker rides it out and renews its lease before writing again, which tells it
                # whether the run is still its own.
                with translate_errors():
                    raise exc

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        async with self._connection() as conn:
            row = await _one(
                conn,
                "record_progress",
                run_id=run_id,
                attempt=attempt,
                model_name=model_name,
                now=self._clock.now(),
                **usage_params(usage),
            )
        if row is None:
            raise lease_lost(run_id, attempt)

    async def finish_run(self, run_id: str, attempt: int, outcome: Outcome) -> Run:
        async def body(conn: Conn) -> Run:
            held = held_row(await self._lock_run(conn, run_id), run_id, attempt)
            settlement = finish_plan(run_id, held["status"], held["cancel_action"], outcome)
            row = await _one(
                conn,
                "end_run",
                run_id=run_id,
                attempt=attempt,
                status=outcome.status,
                error=outcome.error,
                model_name=outcome.model_name,
                now=self._clock.now(),
                **usage_params(outcome.usage),
            )
            assert row is not None  # locked and held
            await self._settle_with(
                conn,
                held["thread_id"],
                settlement,
                values=outcome.thread_values,
                interrupts=outcome.thread_interrupts,
            )
            await self._enqueue_webhook(conn, run_from_row(row))
            return run_from_row(row)

        return await self._transaction(body)

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = held_row(await self._lock_run(conn, run_id), run_id, attempt)
            await _exec(conn, "delete_runs", run_ids=[run_id])
            # A rolled-back run leaves no trace, so the thread is as if it never ran: its error stays.
            await self._settle_with(conn, held["thread_id"], QUEUE_LEFT)
            return run_from_row(held)

        return await self._transaction(body)

    async def release_run(self, run_id: str, attempt: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = held_row(await self._lock_run(conn, run_id), run_id, attempt)
            row = await _one(conn, "requeue_run", run_id=run_id, attempt=attempt, now=self._clock.now())
            assert row is not None
            # Back in the queue at its old place; the thread stays busy and keeps its updated_at.
            await self._settle(conn, held["thread_id"], None, touch=False)
            return run_from_row(row)

        return await self._transaction(body)

    async def queue_stats(self) -> QueueStats:
        async with self._connection() as conn:
            row = await _one(conn, "queue_stats")
        assert row is not None  # an aggregate always has a row
        return QueueStats(
            pending=row["pending"] or 0, running=row["running"] or 0, busy_workers=row["busy_workers"] or 0
        )

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        async with self._connection() as conn:
            rows = await _all(conn, "expired_runs", now=self._clock.now(), limit=limit)
        return [run_from_row(row) for row in rows]

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = run_from_row(held_row(await self._lock_run(conn, run_id), run_id, attempt))
            now = self._clock.now()
            plan = recovery_plan(held, max_attempts, now)
            params: dict[str, Any] = {"run_id": run_id, "attempt": attempt, "now": now}
            if plan.thread is None:
                # Back to the queue (a rollback request stays on it; the next claimer performs it).
                row = _locked(await _one(conn, "requeue_run", **params))
                await self._settle(conn, held.thread_id, None, touch=False)
                return run_from_row(row)
            row = _locked(
                await _one(
                    conn,
                    "end_run",
                    status=plan.status,
                    error=plan.error,
                    model_name=None,
                    **usage_params(None),
                    **params,
                )
            )
            await self._settle_with(conn, held.thread_id, plan.thread)
            await self._enqueue_webhook(conn, run_from_row(row))
            return run_from_row(row)

        return await self._transaction(body)


def _locked(row: DictRow | None) -> DictRow:
    """The row an update of a run this transaction holds locked returned (it always matches)."""
    assert row is not None
    return row


class _HeadMoved(Exception):
    """The claimed thread's queue head changed between the scan and the lock (internal)."""
