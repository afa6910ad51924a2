"""`PostgresStore`'s worker side: claims, leases, the attempt hold (the checkpoint fence), settlement
and recovery. Every write is fenced by `status = 'running' AND attempt = %s`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg import AsyncClientCursor, AsyncCursor, pq
from psycopg import errors as pg_errors
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from runplane.core.clock import lease_deadline
from runplane.core.errors import CancelRequested, LeaseLost, StoreUnavailable
from runplane.core.lifecycle import QUEUE_LEFT, ThreadSettlement, finish_plan, recovery_plan, yields_to_cancel
from runplane.core.models import CancelAction, Claimed, Finished, Outcome, QueueStats, Run, TokenUsage
from runplane.core.store import RunOnlyCalls
from runplane.db.postgres import hold_checks_at_commit, offer_hold, translate_errors
from runplane.stores.postgres._attempt_commits import AttemptCommits, Statements
from runplane.stores.postgres._base import (
    QUERIES,
    PostgresBase,
    every,
    execute,
    locked,
    one,
    send,
)
from runplane.stores.postgres._rows import Conn, held_row, lease_lost, run_from_row, usage_params

#: The SQLSTATE `runplane_check_hold` fails a transaction with when the attempt lost its lease.
LEASE_NOT_HELD = "RPL01"


class PostgresLeases(RunOnlyCalls, PostgresBase):
    """The worker's methods; see `core.store.Store` for the contracts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._attempt_commits = AttemptCommits(self._commit_checked)

    async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed:
        rows = await self._statement(
            "claim",
            worker_id=worker_id,
            lease_expires_at=lease_deadline(self._clock, lease_seconds),
            now=self._clock.now(),
        )
        row = rows[0]
        if row["run_id"] is None:
            return Claimed(None, contended=row["contended"])
        return Claimed(run_from_row(row), more=row["more"])

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        async with self._connection() as conn:
            row = await one(
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
    async def hold_attempt(
        self, run_id: str, attempt: int, max_seconds: float, *, early: bool = False
    ) -> AsyncIterator[None]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        # A saver on this database joins the hold (`db.postgres.HoldTransaction`): its statements
        # run in the hold's transaction, with its COMMIT, so the checkpoint commits with the lease
        # check or not at all.
        if hold_checks_at_commit(self._conninfo):
            # The block only hands its statements over: the lease is checked (the run
            # share-locked) in the round trip that writes them and commits. No connection is held
            # while the saver serializes the checkpoint, and no session idles in a transaction.
            with offer_hold(self._conninfo) as hold:
                yield
            if hold.deferred:
                # With the attempt's other writes in flight, if any (`AttemptCommits`).
                if early:
                    self._attempt_commits.submit(run_id, attempt, hold.deferred)
                else:
                    await self._attempt_commits.commit(run_id, attempt, hold.deferred)
            return
        timeout_ms = str(max(1, round(max_seconds * 1000)))
        async with contextlib.AsyncExitStack() as stack:
            # Only the store's own statements are translated: errors of the block are not ours.
            with translate_errors():
                conn = await stack.enter_async_context(self._pool.connection())
                held = await _begin_hold(conn, run_id, attempt, timeout_ms)
            if held is None:
                await _rollback(conn)
                raise lease_lost(run_id, attempt)
            try:
                with offer_hold(self._conninfo) as hold:
                    yield
            except BaseException:
                await _rollback(conn)
                raise
            await self._commit_hold(run_id, attempt, hold.deferred, check=False, conn=conn)

    async def writes_committed(
        self, run_id: str, attempt: int, *, for_finish: bool = False
    ) -> BaseException | None:
        return await self._attempt_commits.drain(run_id, attempt, for_finish=for_finish)

    async def _commit_checked(self, run_id: str, attempt: int, statements: Statements) -> None:
        await self._commit_hold(run_id, attempt, statements, check=True)

    async def _commit_hold(
        self, run_id: str, attempt: int, statements: Statements, *, check: bool, conn: Conn | None = None
    ) -> AsyncCursor[DictRow]:
        """Run the statements deferred to the hold and commit, in one round trip (one simple query,
        parameters bound client side); with `check`, begin the transaction and check the lease
        first, in the same round trip. A failed check fails the transaction: nothing commits.
        Returns the cursor, on the first statement's result (`nextset` for the others')."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self._connection())
            binder = AsyncClientCursor(conn)
            encoding = conn.info.encoding
            script = [binder.mogrify(query, params).encode(encoding) for query, params in statements]
            if check:
                params = {"run_id": run_id, "attempt": attempt}
                script[:0] = [b"BEGIN", binder.mogrify(QUERIES["check_hold"], params).encode(encoding)]
            script.append(b"COMMIT")
            try:
                return await conn.execute(b"; ".join(script), prepare=False)
            except psycopg.Error as exc:
                await _rollback(conn)  # nothing of the transaction was committed
                if check and exc.sqlstate == LEASE_NOT_HELD:
                    raise lease_lost(run_id, attempt) from exc  # the check failed (`check_hold`)
                if isinstance(exc, pg_errors.IdleInTransactionSessionTimeout):
                    # PostgreSQL ended the session: the holder stalled past `max_seconds`, and the
                    # run may have been recovered meanwhile.
                    raise LeaseLost(f"run {run_id} attempt {attempt} lost its hold: {exc}") from exc
                # The server went away (a restart, a network cut): an infrastructure fault. The
                # worker rides it out and renews its lease before writing again, which tells it
                # whether the run is still its own.
                with translate_errors():
                    raise exc

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        async with self._connection() as conn:
            row = await one(
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

    async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        # The transition is checked before any write. What the finish does to the thread does not
        # depend on a cancel request (only whether the finish yields to it does), so the plan is
        # made here and the statement applies it: one round trip.
        settlement = finish_plan(run_id, "running", None, outcome)
        params = {
            "run_id": run_id,
            "attempt": attempt,
            "now": self._clock.now(),
            "status": outcome.status,
            "error": outcome.error,
            "model_name": outcome.model_name,
            **usage_params(outcome.usage),
            "yields_to_cancel": yields_to_cancel(outcome),
            **_settlement_params(settlement, outcome),
        }
        writes = await self._attempt_commits.take_for_finish(run_id, attempt)
        if writes:
            rows = await self._finish_with_writes(run_id, attempt, writes, params)
        else:
            rows = await self._statement("finish", **params)
        if not rows:
            raise lease_lost(run_id, attempt)
        row = rows[0]
        if row["refused_for"] is not None:
            raise CancelRequested(row["refused_for"])  # the statement wrote nothing
        if row["has_webhook"]:
            # Its outbox row is built here (`webhook_payload`): the transaction of several
            # statements, which the statement left to us (it wrote nothing).
            return await self._finish_with_webhook(run_id, attempt, outcome)
        return Finished(run_from_row(row), bool(row["head_claimable"]))

    async def _finish_with_writes(
        self, run_id: str, attempt: int, writes: Statements, params: dict[str, Any]
    ) -> list[DictRow]:
        """The `finish` statement's rows, with the attempt's last checkpoint writes (left to the
        finish: `AttemptCommits.drain`) committed before it in its transaction, after the lease
        check: one round trip. They commit even when the finish yields to a cancel (it writes
        nothing then), as they would have alone. If the transaction fails, they are held for the
        next try of the finish."""
        finish = (QUERIES["finish"], params)

        async def once(conn: Conn) -> list[DictRow]:
            cursor = await self._commit_hold(run_id, attempt, [*writes, finish], check=True, conn=conn)
            for _ in range(len(writes) + 2):  # past BEGIN, the check and the writes
                cursor.nextset()
            return await cursor.fetchall()

        try:
            rows: list[DictRow] = await self._retrying(once)
        except LeaseLost:
            raise  # the writes of an attempt that lost its lease never commit
        except BaseException:
            self._attempt_commits.give_back(run_id, attempt, writes)
            raise
        return rows

    async def _finish_with_webhook(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        async def body(conn: Conn) -> tuple[Run, AsyncCursor[DictRow]]:
            # Sent together: the fenced update runs once the thread is locked (no row when the run
            # is gone or no longer held). The cancel request, which only a transaction holding the
            # thread's lock changes, is read from the update; the plan refusing it rolls it back.
            await send(conn, "lock_thread_of_run", run_id=run_id)
            row = await one(
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
            if row is None:
                raise lease_lost(run_id, attempt)
            settlement = finish_plan(run_id, "running", row["cancel_action"], outcome)
            # Its row (whether the thread's next run is claimable) comes back with the COMMIT.
            settled = await self._settle_with(
                conn,
                row["thread_id"],
                settlement,
                values=outcome.thread_values,
                interrupts=outcome.thread_interrupts,
            )
            run = run_from_row(row)
            await self._enqueue_webhook(conn, run)
            return run, settled

        async def looked(ended: tuple[Run, AsyncCursor[DictRow]]) -> Finished:
            run, settled = ended
            head = await settled.fetchone()
            return Finished(run, head is not None and bool(head["head_claimable"]))

        return await self._transaction_then(body, looked)

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = held_row(await self._lock_run(conn, run_id), run_id, attempt)
            await execute(conn, "delete_runs", run_ids=[run_id])
            # A rolled-back run leaves no trace, so the thread is as if it never ran: its error stays.
            await self._settle_with(conn, held["thread_id"], QUEUE_LEFT)
            return run_from_row(held)

        return await self._transaction(body)

    async def release_run(self, run_id: str, attempt: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = held_row(await self._lock_run(conn, run_id), run_id, attempt)
            row = await one(conn, "requeue_run", run_id=run_id, attempt=attempt, now=self._clock.now())
            assert row is not None
            # Back in the queue at its old place; the thread stays busy and keeps its updated_at.
            await self._settle(conn, held["thread_id"], None, touch=False)
            return run_from_row(row)

        return await self._transaction(body)

    async def queue_stats(self) -> QueueStats:
        async with self._connection() as conn:
            row = await one(conn, "queue_stats")
        assert row is not None  # an aggregate always has a row
        return QueueStats(
            pending=row["pending"] or 0, running=row["running"] or 0, busy_workers=row["busy_workers"] or 0
        )

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        async with self._connection() as conn:
            rows = await every(conn, "expired_runs", now=self._clock.now(), limit=limit)
        return [run_from_row(row) for row in rows]

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        async def body(conn: Conn) -> Run:
            held = run_from_row(held_row(await self._lock_run(conn, run_id), run_id, attempt))
            now = self._clock.now()
            plan = recovery_plan(held, max_attempts, now)
            params: dict[str, Any] = {"run_id": run_id, "attempt": attempt, "now": now}
            if plan.thread is None:
                # Back to the queue (a rollback request stays on it; the next claimer performs it).
                row = locked(await one(conn, "requeue_run", **params))
                await self._settle(conn, held.thread_id, None, touch=False)
                return run_from_row(row)
            row = locked(
                await one(
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


def _settlement_params(settlement: ThreadSettlement, outcome: Outcome) -> dict[str, Any]:
    """Bind values for `runplane_finish`'s thread settlement, as `PostgresBase._settle` binds them."""
    return {
        "thread_status": settlement.status,
        "sets_error": settlement.sets_error,
        "thread_error": settlement.error,
        "set_values": outcome.thread_values is not None,
        "values": Jsonb(outcome.thread_values) if outcome.thread_values is not None else None,
        "interrupts": Jsonb(outcome.thread_interrupts) if outcome.thread_interrupts is not None else None,
    }


async def _begin_hold(conn: Conn, run_id: str, attempt: int, timeout_ms: str) -> DictRow | None:
    """Begin the hold's transaction and share-lock the run, in one round trip, and not pipelined:
    one simple query (parameters bound client side), after which the session is idle in its
    transaction, so that PostgreSQL's idle limit is armed (a pipeline ends with a Flush after its
    Sync, which leaves it unarmed: see `FencedPostgresSaver`)."""
    params = {"run_id": run_id, "attempt": attempt, "timeout_ms": timeout_ms}
    hold = AsyncClientCursor(conn).mogrify(QUERIES["hold_attempt"], params)
    cursor = await conn.execute(b"BEGIN; " + hold.encode(conn.info.encoding), prepare=False)
    cursor.nextset()  # past BEGIN's result
    return await cursor.fetchone()


async def _rollback(conn: Conn) -> None:
    """End the hold's transaction without committing, unless the session has gone (then the pool
    replaces the connection)."""
    if conn.closed or conn.info.transaction_status == pq.TransactionStatus.IDLE:
        return
    with contextlib.suppress(psycopg.Error):
        await conn.execute(b"ROLLBACK", prepare=False)
