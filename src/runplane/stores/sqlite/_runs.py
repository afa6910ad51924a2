"""Runs of `SqliteStore`: admission, cancel and delete, and the worker's side (claim, lease, fenced
writes, finish, recovery). Each method is one transaction in one hop (`_transactions`); the rules
are `core.lifecycle`'s plans, applied here."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any, cast

from runplane.core.clock import lease_deadline
from runplane.core.errors import Conflict, NotFound, SlotTaken
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    admission_plan,
    can_transition,
    cancel_plan,
    check_assistant_unchanged,
    check_transition,
    finish_plan,
    recovery_plan,
    starts_at_admission,
    thread_config_after_admission,
)
from runplane.core.models import (
    Admission,
    AssistantSeen,
    CancelAction,
    CancelResult,
    Claimed,
    CronFire,
    Finished,
    NewRun,
    Outcome,
    QueueStats,
    Run,
    RunFilter,
    TokenUsage,
    metadata_after_admission,
)
from runplane.core.store import RunOnlyCalls
from runplane.stores.sqlite._codec import (
    dump_json,
    from_micros,
    load_json,
    opt_json,
    opt_micros,
    row_to_run,
    to_micros,
    usage_params,
)
from runplane.stores.sqlite._connection import QUERIES
from runplane.stores.sqlite._thread_state import check_thread_free
from runplane.stores.sqlite._transactions import (
    Transactions,
    in_transaction,
    lease_lost,
    owned_run,
    owned_thread,
    row,
    rows,
    written,
)


def to_micros_span(seconds: float) -> int:
    return int(seconds * 1_000_000)


# `claim_run` updates whatever `claimable_run` picks, in the same statement; or the run an admission
# just inserted (`NewRun.claim_for`).
_CLAIM_SQL = QUERIES["claim_run"].replace(":seq", "(" + QUERIES["claimable_run"].rstrip(";") + ")")
_CLAIM_ADMITTED_SQL = QUERIES["claim_run"].replace(":seq", "(SELECT seq FROM runs WHERE run_id = :run_id)")


class SqliteRuns(RunOnlyCalls, Transactions):
    """The run and worker methods of `SqliteStore`; see `core.store.Store` for their contracts."""

    #: run_id -> (attempt, until when its lease is fresh): leases this store took or renewed.
    _fresh_leases: dict[str, tuple[int, int]]

    # -- admission ------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> Admission:
        metadata = dump_json(new.metadata)
        kwargs = dump_json(new.kwargs)
        not_before = opt_micros(new.not_before)
        claimant = new.claim_for

        def admit(conn: sqlite3.Connection) -> Admission | tuple[int, tuple[Run, ...], tuple[Run, ...]]:
            if new.assistant_seen is not None:
                found = row(conn, "assistant_seen", {"assistant_id": new.assistant_id})
                assistant_now = None
                if found is not None:
                    assistant_now = AssistantSeen(found["version"], from_micros(found["created_at"]))
                check_assistant_unchanged(new.assistant_id, new.assistant_seen, assistant_now)
            if new.cron is not None:
                # In this transaction: the slot moves if and only if the run is admitted.
                self._claim_slot_in(conn, new.cron)
            if new.idempotency_key is not None:
                key = {"owner": new.owner, "idempotency_key": new.idempotency_key}
                seen = row(conn, "get_run_by_idempotency_key", key)
                if seen is not None:
                    if seen["fingerprint"] != new.fingerprint:
                        raise Conflict("idempotency key already used with a different payload")
                    return Admission(run=row_to_run(seen), replayed=True)
            if row(conn, "run_exists", {"run_id": new.run_id}) is not None:
                raise Conflict(f"run {new.run_id} already exists")
            now = self._now()
            thread = row(conn, "get_thread", {"thread_id": new.thread_id})
            if thread is None and new.if_not_exists == "create":
                params = {"thread_id": new.thread_id, "owner": new.owner, "status": "idle", "now": now}
                thread = row(conn, "insert_thread", {**params, "metadata": dump_json(new.thread_metadata)})
            if thread is None or thread["owner"] != new.owner:
                raise NotFound(f"thread {new.thread_id} not found")
            check_thread_free(thread, now)

            active = {
                found["run_id"]: found for found in rows(conn, "active_runs", {"thread_id": new.thread_id})
            }
            cancel_running, cancel_pending, action = admission_plan(
                new.multitask_strategy, [(run_id, found["status"]) for run_id, found in active.items()]
            )
            requested: list[Run] = []
            for run_id in cancel_running:
                # No row back: it already carries a rollback request, which is never downgraded.
                found = row(conn, "request_cancel_running", {"run_id": run_id, "action": action, "now": now})
                requested.append(row_to_run(found or active[run_id]))
            cancelled: list[Run] = []
            for run_id in cancel_pending:
                if action == "rollback":
                    gone = written(row(conn, "delete_run", {"run_id": run_id}))
                else:
                    params = {"run_id": run_id, "action": action, "now": now}
                    gone = written(row(conn, "interrupt_pending", params))
                    self._enqueue_webhook_in(conn, row_to_run(gone))
                cancelled.append(row_to_run(gone))

            rows(
                conn,
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
            claimed = None
            if claimant is not None and starts_at_admission(
                [(run_id, found["status"]) for run_id, found in active.items()],
                cancel_pending,
                None if not_before is None else from_micros(not_before),
                from_micros(now),
            ):
                params = {
                    "run_id": new.run_id,
                    "worker_id": claimant.worker_id,
                    "lease_expires_at": to_micros(lease_deadline(self._clock, claimant.lease_seconds)),
                    "now": now,
                }
                claimed = written(row(conn, "claim_run", params, _CLAIM_ADMITTED_SQL))
            if new.thread_config is not None:
                config = thread_config_after_admission(load_json(thread["config"]), new.thread_config)
                rows(conn, "set_thread_config", {"thread_id": new.thread_id, "config": dump_json(config)})
            merged = metadata_after_admission(load_json(thread["metadata"]), new.thread_metadata_update)
            if merged is not None:
                params = {"thread_id": new.thread_id, "metadata": dump_json(merged), "now": now}
                rows(conn, "update_thread_metadata", params)
            rows(conn, "mark_thread_busy", {"thread_id": new.thread_id, "now": now})
            if claimed is not None:
                return Admission(row_to_run(claimed), tuple(requested), tuple(cancelled))
            return now, tuple(requested), tuple(cancelled)

        admitted = await self._transact(admit)
        if isinstance(admitted, Admission):
            run = admitted.run
            if claimant is not None and admitted.claimed and run.lease_expires_at is not None:
                expires_at = to_micros(run.lease_expires_at)
                self._remember_lease(
                    run.run_id, run.attempt, expires_at, to_micros_span(claimant.lease_seconds)
                )
            return admitted
        now, requested, cancelled = admitted
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
        return Admission(run, requested, cancelled)

    def _claim_slot_in(self, conn: sqlite3.Connection, fire: CronFire) -> None:
        """Move the cron past `fire.slot` in the admitting transaction, or raise `SlotTaken`: the
        conditional update that lets exactly one scheduler fire a slot."""
        params = {
            "cron_id": fire.cron_id,
            "slot": to_micros(fire.slot),
            "next_run_date": opt_micros(fire.next_run_date),
            "now": self._now(),
        }
        if row(conn, "claim_cron_slot", params) is None:
            raise SlotTaken(f"cron {fire.cron_id} slot {fire.slot.isoformat()} is taken")

    # -- reading and ending runs ------------------------------------------------------------------

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        return row_to_run(await self._read(lambda conn: owned_run(conn, run_id, owner, thread_id)))

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        params: dict[str, Any] = {"thread_id": thread_id, "limit": filter.limit, "offset": filter.offset}

        def read(conn: sqlite3.Connection) -> list[Any]:
            owned_thread(conn, thread_id, owner)
            if filter.status is None:
                return rows(conn, "list_runs", params)
            return rows(conn, "list_runs_by_status", {**params, "status": filter.status})

        return [row_to_run(found) for found in await self._read(read)]

    async def request_cancel(
        self, run_id: str, owner: str, action: CancelAction, thread_id: str | None = None
    ) -> CancelResult:
        def cancel(conn: sqlite3.Connection) -> CancelResult:
            run = row_to_run(owned_run(conn, run_id, owner, thread_id))
            plan = cancel_plan(run.status, run.cancel_action, action)
            params = {"run_id": run_id, "action": plan.cancel_action, "now": self._now()}
            if plan.step == "delete":
                rows(conn, "delete_run", {"run_id": run_id})
            elif plan.step == "interrupt":
                run = row_to_run(written(row(conn, "interrupt_pending", params)))
            elif plan.step == "request" and plan.cancel_action is not None:
                run = row_to_run(written(row(conn, "request_cancel_running", params)))
            if plan.thread is not None:
                self._settle_thread_in(conn, run.thread_id, plan.thread)
            if plan.webhook_due:
                self._enqueue_webhook_in(conn, run)
            return CancelResult(run, settled=plan.settled, deleted=plan.step == "delete")

        return await self._transact(cancel)

    async def delete_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        def delete(conn: sqlite3.Connection) -> Run:
            run = row_to_run(owned_run(conn, run_id, owner, thread_id))
            if run.status == "running":
                raise Conflict(f"run {run_id} is running; cancel it first")
            rows(conn, "delete_run", {"run_id": run_id})
            if run.status == "pending":
                self._settle_thread_in(conn, run.thread_id, QUEUE_LEFT)
            return run

        return await self._transact(delete)

    # -- workers --------------------------------------------------------------------------------

    async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed:
        lease_expires_at = to_micros(lease_deadline(self._clock, lease_seconds))

        def claim(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool] | None:
            now = self._now()
            params = {"now": now, "worker_id": worker_id, "lease_expires_at": lease_expires_at}
            found = row(conn, "claim_run", params, _CLAIM_SQL)
            if found is None:
                return None  # another connection took it between the look and the lock
            check_transition(found["run_id"], "pending", "running")
            rows(conn, "mark_thread_busy", {"thread_id": found["thread_id"], "now": now})
            # The rest of the queue as this write transaction sees it: a run admitted after it
            # commits sends its wake-up hint after that, to a worker that already listens.
            more = row(conn, "claimable_run", {"now": now}) is not None
            return found, more

        def look_then_claim(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool] | None:
            # An idle worker polls often: look without the write lock first, so empty polls never
            # block writers. "Nothing claimable" seen then is a valid answer for this call.
            if row(conn, "claimable_run", {"now": self._now()}) is None:
                return None
            return in_transaction(conn, claim)

        claimed = await self._read(look_then_claim)
        if claimed is None:
            return Claimed(None)
        run = row_to_run(claimed[0])
        self._remember_lease(run.run_id, run.attempt, lease_expires_at, to_micros_span(lease_seconds))
        return Claimed(run, more=claimed[1])

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        expires_at = to_micros(lease_deadline(self._clock, lease_seconds))
        params = {
            "run_id": run_id,
            "attempt": attempt,
            "worker_id": worker_id,
            "lease_expires_at": expires_at,
        }
        # One conditional UPDATE is atomic on its own; no read-check-write, no explicit transaction.
        renewed = await self._read(lambda conn: row(conn, "renew_lease", params))
        if renewed is None:
            self._forget_lease(run_id)
            raise lease_lost(run_id, attempt)
        self._remember_lease(run_id, attempt, expires_at, to_micros_span(lease_seconds))
        return cast(CancelAction | None, renewed["cancel_action"])

    async def writes_committed(
        self, run_id: str, attempt: int, *, for_finish: bool = False
    ) -> BaseException | None:
        return None  # every write commits before its hold ends

    @contextlib.asynccontextmanager
    async def hold_attempt(
        self, run_id: str, attempt: int, max_seconds: float, *, early: bool = False
    ) -> AsyncIterator[None]:
        # A check only: holding this connection's write lock would block the checkpointer's own
        # connection to the same file until its busy timeout. And no check at all while this store
        # took or renewed the attempt's lease less than half a lease ago (see `_lease_is_fresh`).
        if not self._lease_is_fresh(run_id, attempt):
            params = {"run_id": run_id, "attempt": attempt}
            if await self._read(lambda conn: row(conn, "get_held_run", params)) is None:
                raise lease_lost(run_id, attempt)
        yield

    def _remember_lease(self, run_id: str, attempt: int, expires_at: int, lease: int) -> None:
        self._fresh_leases[run_id] = (attempt, expires_at - lease // 2)

    def _forget_lease(self, run_id: str) -> None:
        self._fresh_leases.pop(run_id, None)

    def _lease_is_fresh(self, run_id: str, attempt: int) -> bool:
        """Whether `attempt` surely still holds `run_id`, without asking the database.

        It does while the lease this store wrote (at its claim or last renewal) has more than half
        its length to run. Another attempt can exist only after the run left `running`: by its
        own attempt's finish, discard or release (which forget the lease here first), by a thread
        deletion (forgotten too, when made through this store), or by recovery, which any process
        makes only once the lease has expired (`recovery_plan`, in the recovering transaction,
        against the same wall clock). Half a lease of margin covers a stall between this check and
        the write, as the database check had that window too.
        """
        known = self._fresh_leases.get(run_id)
        return known is not None and known[0] == attempt and self._now() < known[1]

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        params = {"run_id": run_id, "attempt": attempt, "model_name": model_name, **usage_params(usage)}
        if (
            await self._read(lambda conn: row(conn, "record_progress", {**params, "now": self._now()}))
            is None
        ):
            raise lease_lost(run_id, attempt)

    async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        self._forget_lease(run_id)  # the attempt's writes are over, or were never its to make
        values = opt_json(outcome.thread_values)
        interrupts = dump_json(outcome.thread_interrupts)

        def finish(conn: sqlite3.Connection) -> tuple[sqlite3.Row, bool]:
            now = self._now()
            found = None
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
                found = row(conn, "finish_run", params)
            if found is None:
                # Tell why, in the reference's order: lease, then cancel, then transition.
                held = row(conn, "get_held_run", {"run_id": run_id, "attempt": attempt})
                if held is None:
                    raise lease_lost(run_id, attempt)
                finish_plan(run_id, held["status"], held["cancel_action"], outcome)  # raises why
                raise AssertionError("unreachable: finish_run matched no row for a held run")
            # The conditional update above checked the plan's preconditions in SQL.
            settlement = finish_plan(run_id, "running", None, outcome)
            params = {
                "thread_id": found["thread_id"],
                "outcome": settlement.status,
                "values": values,
                "interrupts": interrupts,
                "error": settlement.error,
                "now": now,
            }
            rows(conn, "finish_thread", params)
            self._enqueue_webhook_in(conn, row_to_run(found))
            head = row(conn, "thread_head_claimable", {"thread_id": found["thread_id"], "now": now})
            return found, head is not None and bool(head["claimable"])

        found, next_claimable = await self._transact(finish)
        return Finished(row_to_run(found), next_claimable)

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        self._forget_lease(run_id)  # the attempt's writes are over, or were never its to make

        def discard(conn: sqlite3.Connection) -> sqlite3.Row:
            found = row(conn, "discard_run", {"run_id": run_id, "attempt": attempt})
            if found is None:
                raise lease_lost(run_id, attempt)
            # A rolled-back run leaves no trace, so the thread is as if it never ran: its error stays.
            self._settle_thread_in(conn, found["thread_id"], QUEUE_LEFT)
            return found

        return row_to_run(await self._transact(discard))

    async def release_run(self, run_id: str, attempt: int) -> Run:
        self._forget_lease(run_id)  # the attempt's writes are over, or were never its to make
        params = {"run_id": run_id, "attempt": attempt}
        released = await self._read(lambda conn: row(conn, "release_run", {**params, "now": self._now()}))
        if released is None:
            raise lease_lost(run_id, attempt)
        return row_to_run(released)

    async def queue_stats(self) -> QueueStats:
        stats = written(await self._read(lambda conn: row(conn, "queue_stats", {})))  # an aggregate has a row
        return QueueStats(
            pending=stats["pending"] or 0,
            running=stats["running"] or 0,
            busy_workers=stats["busy_workers"] or 0,
        )

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        expired = await self._read(
            lambda conn: rows(conn, "expired_runs", {"now": self._now(), "limit": limit})
        )
        return [row_to_run(found) for found in expired]

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        self._forget_lease(run_id)  # the attempt's writes are over, or were never its to make

        def recover(conn: sqlite3.Connection) -> sqlite3.Row:
            held = row(conn, "get_held_run", {"run_id": run_id, "attempt": attempt})
            if held is None:
                raise lease_lost(run_id, attempt)
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
            found = written(row(conn, "recover_run", params))
            if plan.thread is not None:
                self._settle_thread_in(conn, found["thread_id"], plan.thread)
                self._enqueue_webhook_in(conn, row_to_run(found))
            return found

        return row_to_run(await self._transact(recover))
