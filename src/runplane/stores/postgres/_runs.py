"""`PostgresStore`'s runs: admission (with its multitask strategy), reads, cancel and delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from runplane.core.clock import lease_deadline
from runplane.core.errors import AssistantChanged, Conflict, NotFound, SlotTaken
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    admission_plan,
    cancel_plan,
    check_assistant_unchanged,
    starts_at_admission,
    thread_config_after_admission,
)
from runplane.core.models import (
    Admission,
    AssistantSeen,
    CancelAction,
    CancelResult,
    NewRun,
    Run,
    RunFilter,
    metadata_after_admission,
)
from runplane.stores.postgres._base import PostgresBase, every, execute, locked, one, send
from runplane.stores.postgres._crons import lock_cron_slot
from runplane.stores.postgres._rows import Conn, run_from_row, runs_in_order
from runplane.stores.postgres._thread_state import check_thread_free


class PostgresRuns(PostgresBase):
    """Admission, reads, cancel and delete of runs; see `core.store.Store` for the contracts."""

    async def create_run(self, new: NewRun) -> Admission:
        if new.cron is None:
            # The common case in one statement: a thread with no active run, no hold, no replay.
            admitted = await self._admit_alone(new)
            if admitted is not None:
                return admitted
        # A lost race on the idempotency key or the thread insert is retried by `_transaction`:
        # the next attempt sees the winner and replays or conflicts like the reference.
        return await self._transaction_then(lambda conn: self._admit_fired(conn, new), _admitted)

    async def _admit_alone(self, new: NewRun) -> Admission | None:
        """Admit `new` in one statement (`runplane_admit`), or None when there is a multitask
        strategy to apply, a replay or conflict to tell, or a hold to wait for: then nothing was
        written, and the admission transaction decides. A lost race on the run's id is retried by
        `_statement`: the next attempt finds the id used, and leaves it to the transaction."""
        now = self._clock.now()
        # Its fast path admits only on a thread with no active run: the run starts at once if due.
        claims = starts_at_admission((), (), new.not_before, now)
        rows = await self._statement(
            "admit",
            **_run_row(new, now),
            **self._claim_row(new, claims),
            creates=new.if_not_exists == "create",
            thread_metadata=Jsonb(new.thread_metadata),
            thread_config=Jsonb(new.thread_config) if new.thread_config is not None else None,
            thread_metadata_update=Jsonb(new.thread_metadata_update),
            assistant_version=new.assistant_seen.version if new.assistant_seen else None,
            assistant_created_at=new.assistant_seen.created_at if new.assistant_seen else None,
        )
        row = rows[0]
        if row["outcome"] == "assistant_changed":
            raise AssistantChanged(f"assistant {new.assistant_id} changed since it was read")
        if row["outcome"] == "not_found":
            raise NotFound(f"thread {new.thread_id} not found")
        if row["outcome"] == "admitted":
            return Admission(run_from_row(row))
        return None

    async def _admit_fired(self, conn: Conn, new: NewRun) -> Admission | _Inserted:
        if new.cron is not None and not await lock_cron_slot(conn, new.cron, self._clock.now()):
            raise SlotTaken(f"cron {new.cron.cron_id} slot {new.cron.slot.isoformat()} is taken")
        # Same transaction: the slot moves if and only if the run is admitted.
        return await self._admit(conn, new)

    @staticmethod
    async def _lock_for_admission(
        conn: Conn, thread_id: str
    ) -> tuple[AsyncCursor[DictRow], AsyncCursor[DictRow]]:
        """Lock the thread, then read its active runs (rows read later)."""
        thread_row = await send(conn, "lock_thread", thread_id=thread_id)
        return thread_row, await send(conn, "active_runs", thread_id=thread_id)

    async def _admit(self, conn: Conn, new: NewRun) -> Admission | _Inserted:
        now = self._clock.now()
        # Sent together (the transaction is pipelined) and run in this order by the server, each
        # statement with its own snapshot: the runs are read after the thread's lock is held. A
        # changed assistant, a replay or a conflict found by the probe commits nothing but that
        # lock; a thread to create is created only once none of them was found.
        seen_rows = None
        if new.assistant_seen is not None:
            seen_rows = await send(conn, "assistant_seen", assistant_id=new.assistant_id)
        probe_rows = await send(
            conn, "admission_probe", run_id=new.run_id, owner=new.owner, idempotency_key=new.idempotency_key
        )
        creates = new.if_not_exists == "create"
        if not creates:
            thread_row, active_rows = await self._lock_for_admission(conn, new.thread_id)
        if seen_rows is not None:
            current = await seen_rows.fetchone()
            seen = None if current is None else AssistantSeen(current["version"], current["created_at"])
            check_assistant_unchanged(new.assistant_id, new.assistant_seen, seen)
        probe = await probe_rows.fetchall()
        for row in probe:
            if row["idempotent"]:
                if row["fingerprint"] != new.fingerprint:
                    raise Conflict("idempotency key already used with a different payload")
                return Admission(run=run_from_row(row), replayed=True)
        if probe:
            raise Conflict(f"run {new.run_id} already exists")
        if creates:
            metadata = Jsonb(new.thread_metadata)
            await execute(
                conn, "insert_thread", thread_id=new.thread_id, owner=new.owner, now=now, metadata=metadata
            )
            thread_row, active_rows = await self._lock_for_admission(conn, new.thread_id)
        thread = await thread_row.fetchone()
        if thread is None or thread["owner"] != new.owner:
            raise NotFound(f"thread {new.thread_id} not found")
        check_thread_free(thread, now)

        active = await active_rows.fetchall()
        cancel_running, cancel_pending, action = admission_plan(
            new.multitask_strategy, [(row["run_id"], row["status"]) for row in active]
        )
        requested: list[Run] = []
        if cancel_running:
            await execute(conn, "request_cancel", run_ids=cancel_running, action=action, now=now)
            requested = runs_in_order(await every(conn, "get_runs", run_ids=cancel_running))
        cancelled: list[Run] = []
        if cancel_pending:
            if action == "rollback":
                rows = await every(conn, "delete_runs", run_ids=cancel_pending)
            else:
                rows = await every(conn, "interrupt_pending", run_ids=cancel_pending, action=action, now=now)
            cancelled = runs_in_order(rows)
            if action != "rollback":
                for run in cancelled:
                    await self._enqueue_webhook(conn, run)

        config = None
        if new.thread_config is not None:
            config = Jsonb(thread_config_after_admission(thread["config"], new.thread_config))
        metadata_update = None
        if metadata_after_admission(thread["metadata"], new.thread_metadata_update) is not None:
            # Under the thread lock already held: a second lock after the wake-up would make the
            # claim's SKIP LOCKED pass this thread over (issue 18).
            metadata_update = Jsonb(new.thread_metadata_update)
        claims = starts_at_admission(
            [(row["run_id"], row["status"]) for row in active], cancel_pending, new.not_before, now
        )
        inserted_row = await send(conn, "insert_run", **_run_row(new, now), **self._claim_row(new, claims))
        # Sent with the insert, and both with the COMMIT: one round trip; the run is read once
        # committed (`_admitted`).
        await send(
            conn,
            "settle_admitted",
            thread_id=new.thread_id,
            now=now,
            config=config,
            metadata=metadata_update,
        )
        return _Inserted(inserted_row, tuple(requested), tuple(cancelled))

    def _claim_row(self, new: NewRun, claims: bool) -> dict[str, Any]:
        """Bind values of the lease the new run is admitted with (`NewRun.claim_for`), if `claims`
        (`lifecycle.starts_at_admission`); NULLs admit it pending."""
        if new.claim_for is None or not claims:
            return {"worker_id": None, "lease_expires_at": None}
        return {
            "worker_id": new.claim_for.worker_id,
            "lease_expires_at": lease_deadline(self._clock, new.claim_for.lease_seconds),
        }

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async with self._connection() as conn:
            row = await one(conn, "get_run", run_id=run_id, owner=owner, thread_id=thread_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return run_from_row(row)

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        async with self._connection() as conn:
            await self._owned_thread(conn, thread_id, owner)
            rows = await every(
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
                await execute(conn, "delete_runs", run_ids=ids)
            elif plan.step == "interrupt":
                rows = await every(
                    conn, "interrupt_pending", run_ids=ids, action=plan.cancel_action, now=self._clock.now()
                )
                run = run_from_row(rows[0])
            elif plan.step == "request" and plan.cancel_action is not None:
                await execute(
                    conn, "request_cancel", run_ids=ids, action=plan.cancel_action, now=self._clock.now()
                )
                run = run_from_row(locked(await one(conn, "get_run_for_update", run_id=run_id)))
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
            await execute(conn, "delete_runs", run_ids=[run_id])
            if row["status"] == "pending":
                await self._settle_with(conn, row["thread_id"], QUEUE_LEFT)
            return run_from_row(row)

        return await self._transaction(body)


@dataclass(frozen=True, slots=True)
class _Inserted:
    """An admission whose run row is read once the transaction committed."""

    row: AsyncCursor[DictRow]
    requested: tuple[Run, ...]
    cancelled: tuple[Run, ...]


async def _admitted(result: Admission | _Inserted) -> Admission:
    if isinstance(result, Admission):
        return result  # a replay
    inserted = await result.row.fetchone()
    assert inserted is not None
    return Admission(run_from_row(inserted), result.requested, result.cancelled)


def _run_row(new: NewRun, now: datetime) -> dict[str, Any]:
    """Bind values for the new run's row, as `insert_run` and `runplane_admit` insert it."""
    return {
        "run_id": new.run_id,
        "thread_id": new.thread_id,
        "assistant_id": new.assistant_id,
        "owner": new.owner,
        "multitask_strategy": new.multitask_strategy,
        "now": now,
        "metadata": Jsonb(new.metadata),
        "kwargs": Jsonb(new.kwargs),
        "not_before": new.not_before,
        "idempotency_key": new.idempotency_key,
        "fingerprint": new.fingerprint,
    }
