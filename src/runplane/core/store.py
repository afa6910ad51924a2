"""The `Store` protocol: the durable truth about threads and runs.

Every method is async and atomic. Methods that serve callers take the caller's `owner` and never
return or touch another owner's records: a foreign id is `NotFound`. Worker methods (claim, renew,
finish, ...) are owner-blind: workers are trusted and act on whatever they claimed.

Worker writes are fenced by `attempt`: a claim increments it, and every later write of that claim
is conditional on it, so a worker that lost its lease can never overwrite a newer attempt.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from runplane.core.graphs import Assistant
from runplane.core.models import (
    Admission,
    AssistantFilter,
    AssistantPatch,
    CancelAction,
    CancelResult,
    Claimed,
    Cron,
    CronChanges,
    CronFilter,
    CronFire,
    Finished,
    Json,
    NewAssistant,
    NewCron,
    NewRun,
    NewThread,
    Outcome,
    QueueStats,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStateWrite,
    ThreadStatus,
    ThreadTtl,
    TokenUsage,
    WebhookDelivery,
)


class Store(Protocol):
    """Threads, runs and the run queue. Implemented by `runplane.stores.*`."""

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        """Create a thread (a fresh UUID when `new.thread_id` is None).

        Raises:
            Conflict: the id exists and `if_exists` is "raise". An id owned by someone else is a
                conflict too (ids are global), but the other owner's record is never returned.
        """
        ...

    async def get_thread(self, thread_id: str, owner: str) -> Thread: ...

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        """Merge `metadata` into the thread's metadata."""
        ...

    async def set_thread_state(
        self,
        thread_id: str,
        owner: str,
        values: Json | None,
        interrupts: Json,
        status: ThreadStatus | None = None,
    ) -> Thread:
        """Record the thread's latest graph values (after a state update through the API).

        `status` is applied only when the thread has no active run.
        """
        ...

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        """Delete a thread with all its runs and crons; returns the runs that were still active."""
        ...

    async def reserve_thread(self, thread_id: str, owner: str, token: str, seconds: float) -> Thread:
        """Hold the thread for a state update (`lifecycle.reserve_plan`), for at most `seconds`:
        until `release_thread(token)`, `create_run` on it raises `ThreadReserved`. One transaction,
        under the lock admission takes, so an update and an admission never both proceed.

        Raises:
            NotFound: unknown thread, or another owner's.
            ThreadBusy: a run is active on it, or another update holds it.
        """
        ...

    async def release_thread(
        self, thread_id: str, token: str, state: ThreadStateWrite | None = None
    ) -> Thread | None:
        """End the hold `token` and, with `state`, record the update's values, interrupts and status
        in the same transaction. Returns the thread (None when it was deleted meanwhile).

        Raises:
            LeaseLost: the hold expired and another update took the thread (nothing is written).
        """
        ...

    async def search_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]: ...

    async def count_threads(self, owner: str, filter: ThreadFilter) -> int: ...

    async def thread_usage(self, thread_id: str, owner: str) -> TokenUsage:
        """Token usage summed over every run of the thread."""
        ...

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> Admission:
        """Admit a run atomically under its multitask strategy (`lifecycle.admission_plan`).

        Creates the thread when missing and `new.if_not_exists` is "create". Replays an earlier run
        when `(owner, idempotency_key)` exists with the same fingerprint.

        Raises:
            NotFound: the thread does not exist (or is another owner's) and may not be created.
            ThreadBusy: `reject` on a thread with an active run.
            Conflict: the idempotency key exists with another fingerprint, or the run id exists.
            SlotTaken: `new.cron` is set and its slot was fired (or rescheduled) already.
        """
        ...

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run: ...

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        """Runs of a thread, newest first.

        Raises:
            NotFound: unknown thread.
        """
        ...

    async def queue_stats(self) -> QueueStats:
        """How many runs are pending and running, and how many workers hold them, over every owner
        (the database is the truth shared by every process; operators' metrics read it here)."""
        ...

    async def request_cancel(
        self, run_id: str, owner: str, action: CancelAction, thread_id: str | None = None
    ) -> CancelResult:
        """Record a durable cancel request.

        A pending run is settled at once (interrupted, or deleted for rollback); a running run keeps
        running with `cancel_action` set until its worker stops it; a terminal run is returned as is.
        A second request on a running run keeps the first action unless it upgrades to rollback.
        """
        ...

    async def delete_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        """Delete a pending or terminal run.

        Raises:
            Conflict: the run is running (cancel it first).
        """
        ...

    # -- workers --------------------------------------------------------------------------------

    async def claim_run(self, worker_id: str, lease_seconds: float) -> Run | None:
        """Claim the oldest runnable run: pending, due, first pending of its thread, and its thread
        has no running run (`lifecycle.head_is_claimable`). Sets it running with a lease and
        `attempt + 1`; the thread turns busy. The run of `claim_and_look`."""
        ...

    async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed:
        """`claim_run`, and in the same transaction whether another run is claimable now
        (`Claimed.more`), so a worker claims again only when there is something to claim."""
        ...

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        """Extend the lease; returns the requested cancel action, if any.

        Raises:
            LeaseLost: the run is gone, not running, or held by another attempt.
        """
        ...

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        """Store the model name and token usage seen so far (fenced like every worker write)."""
        ...

    def hold_attempt(
        self, run_id: str, attempt: int, max_seconds: float, *, early: bool = False
    ) -> AbstractAsyncContextManager[None]:
        """Fence a write made outside the store (LangGraph's checkpoints) by attempt `attempt`.

        `early`: the write may be acknowledged before it commits (LangGraph's `durability="async"`),
        where the store commits it itself (PostgreSQL, `AttemptCommits.submit`): leaving the block
        then hands the write over, and `writes_committed` is when it is known to have landed.

        Entering checks that the attempt still holds the run. Where the engine can, the run also
        stays held until the block exits: PostgreSQL keeps a share lock on the run row, so the run's
        recovery (and so any later attempt) waits for the write to commit. A holder that stalls
        for `max_seconds` loses the hold (its session is ended), so a stopped process cannot block
        recovery for ever. SQLite and memory check only; a write can then land if its process
        stalls for a whole lease between the check and the write.

        Raises:
            LeaseLost: the run is gone, not running, or held by another attempt; or, on leaving,
                the hold was lost while the block ran.
        """
        ...

    async def writes_committed(
        self, run_id: str, attempt: int, *, for_finish: bool = False
    ) -> BaseException | None:
        """Wait until every write the attempt's holds acknowledged early has committed or failed.
        Returns the first failure (None: all committed), and forgets it: the attempt may write
        again. Stores that commit every write before its hold ends return None at once.

        With `for_finish` (the run ended, and its outcome goes next to `finish_and_look`), a store
        may leave the writes it has not begun to commit to that finish, which then commits them
        in its transaction, after its lease check: outcome and last writes commit together. A
        later call without it commits them after all (a cancel, a hand-back)."""
        ...

    async def finish_run(self, run_id: str, attempt: int, outcome: Outcome) -> Run:
        """End a running run with `outcome` and set its thread's status.

        Raises:
            LeaseLost: not held by `attempt` any more.
            CancelRequested: a cancel was requested and `outcome.status` is not `interrupted`;
                the worker must take the cancel path instead, so exactly one outcome is durable.
        """
        ...

    async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        """`finish_run`, and in the same transaction whether the thread's next run became claimable
        (`Finished.next_claimable`), and the writes left to it (`writes_committed(for_finish=True)`),
        which commit even when the finish yields to a cancel request. Raises as `finish_run`."""
        ...

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        """Delete a running run after its worker rolled the thread back (cancel `rollback`)."""
        ...

    async def release_run(self, run_id: str, attempt: int) -> Run:
        """Hand a running run back to the queue (graceful shutdown); it resumes from its checkpoint."""
        ...

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        """Running runs whose lease has expired (their worker died or stalled)."""
        ...

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        """Settle a run whose lease expired, if it still is held by `attempt` and expired.

        `interrupt` requested -> interrupted; `attempt >= max_attempts` -> error; otherwise back to
        pending (a rollback request stays on it, and the next claimer performs the rollback).

        Raises:
            LeaseLost: someone else already moved it on.
        """
        ...

    # -- crons --------------------------------------------------------------------------------------
    #
    # A cron's `next_run_date` is the truth schedulers share. A run is fired for a slot by
    # `create_run` with `NewRun.cron` set: the store admits it only if, in the same transaction, it
    # moves the cron from that slot to the next one (a conditional update: PostgreSQL locks the cron
    # row with `FOR UPDATE SKIP LOCKED`). Two schedulers racing for a slot therefore admit one run.

    async def create_cron(self, new: NewCron) -> Cron:
        """Store a cron.

        Raises:
            NotFound: `new.thread_id` is set and is not a thread of `new.owner`.
            Conflict: the cron id exists.
        """
        ...

    async def get_cron(self, cron_id: str, owner: str) -> Cron: ...

    async def update_cron(self, cron_id: str, owner: str, changes: CronChanges) -> Cron:
        """Apply `changes` (metadata is merged, the rest replaced)."""
        ...

    async def delete_cron(self, cron_id: str, owner: str) -> None: ...

    async def search_crons(self, owner: str, filter: CronFilter) -> list[Cron]: ...

    async def count_crons(self, owner: str, filter: CronFilter) -> int: ...

    async def due_crons(self, now: datetime, limit: int = 100) -> list[Cron]:
        """Every owner's crons with a slot to fire at `now` (`lifecycle.cron_is_due`), oldest slot first."""
        ...

    async def next_cron_slot(self) -> datetime | None:
        """The earliest slot an enabled cron will fire (one past the cron's end never fires), so a
        scheduler can sleep until then."""
        ...

    async def skip_cron_slot(self, fire: CronFire) -> bool:
        """Move a cron past a slot without a run (its run could not be admitted); False when another
        scheduler moved it first."""
        ...

    # -- webhook outbox -----------------------------------------------------------------------------
    #
    # Every transaction that makes a run with a `webhook` terminal (finish, a cancel settled before
    # the run started, recovery) inserts the delivery in the same transaction, with the payload of
    # `lifecycle.webhook_payload`. Dispatchers claim deliveries with a lease (a claimed delivery is
    # invisible until `lease_seconds` pass), so a dispatcher killed mid-POST leaves it to another.

    async def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[WebhookDelivery]:
        """Take due deliveries: each gets `attempts + 1` and is hidden for `lease_seconds`."""
        ...

    async def webhook_delivered(self, delivery_id: str) -> None:
        """Remove a delivered webhook from the outbox."""
        ...

    async def webhook_failed(self, delivery_id: str, error: str, retry_at: datetime | None) -> None:
        """Record a failed attempt: try again at `retry_at`, or never (`failed`) when None."""
        ...

    async def next_webhook_due(self) -> datetime | None:
        """When the earliest pending delivery is due (it may be past)."""
        ...

    async def list_webhooks(self, limit: int = 100) -> list[WebhookDelivery]:
        """Pending and failed deliveries, oldest first (for operators and tests)."""
        ...


class RunOnlyCalls:
    """`Store.claim_run` and `Store.finish_run`, the run alone, for a store that implements
    `claim_and_look` and `finish_and_look`: written once for every store."""

    if TYPE_CHECKING:  # the store's own

        async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed: ...

        async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished: ...

    async def claim_run(self, worker_id: str, lease_seconds: float) -> Run | None:
        return (await self.claim_and_look(worker_id, lease_seconds)).run

    async def finish_run(self, run_id: str, attempt: int, outcome: Outcome) -> Run:
        return (await self.finish_and_look(run_id, attempt, outcome)).run


@runtime_checkable
class SupportsCheckpointerUrl(Protocol):
    """A store whose database LangGraph's checkpointer can share."""

    @property
    def checkpointer_url(self) -> str: ...


@runtime_checkable
class AssistantStore(Protocol):
    """Assistants and their immutable versions, implemented by every `runplane.stores.*` store.

    An assistant is visible to its owner, and a system assistant (a graph's own) to everyone; only
    its owner may change or delete it. A foreign id is `NotFound`, as for threads.
    """

    async def put_assistant(
        self, new: NewAssistant, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Assistant:
        """Create an assistant at version 1.

        Raises:
            Conflict: the id exists and `if_exists` is "raise", or it exists and is not visible.
        """
        ...

    async def get_assistant(self, assistant_id: str, owner: str) -> Assistant: ...

    async def patch_assistant(self, assistant_id: str, owner: str, patch: AssistantPatch) -> Assistant:
        """Write a new version (the latest plus `patch`) and make it the assistant's current one."""
        ...

    async def delete_assistant(self, assistant_id: str, owner: str) -> list[Run]:
        """Delete an assistant and its versions; returns its runs that are still active (pending or
        running), which the caller cancels. Finished runs keep their record."""
        ...

    async def assistant_versions(
        self, assistant_id: str, owner: str, metadata: Json, limit: int, offset: int
    ) -> list[Assistant]:
        """Versions, newest first (`updated_at` is the version's creation time)."""
        ...

    async def set_latest_assistant_version(self, assistant_id: str, owner: str, version: int) -> Assistant:
        """Make an earlier version current again.

        Raises:
            NotFound: no such assistant, or no such version.
        """
        ...

    async def search_assistants(self, owner: str, filter: AssistantFilter) -> list[Assistant]: ...

    async def count_assistants(self, owner: str, filter: AssistantFilter) -> int: ...


@runtime_checkable
class ThreadLifecycleStore(Protocol):
    """Thread time-to-live: every store keeps it beside the thread record."""

    async def set_thread_ttl(self, thread_id: str, owner: str, ttl: ThreadTtl | None) -> None:
        """Set (or, with None, clear) a thread's TTL; it counts from the thread's last update."""
        ...

    async def expired_threads(self, limit: int) -> list[Thread]:
        """Threads whose TTL ran out and that have no active run, oldest expiry first."""
        ...

    async def delete_expired_thread(self, thread_id: str) -> bool:
        """Delete a thread with its runs if, checked in the same transaction, its TTL still ran out
        and it has no active run (a run admitted meanwhile keeps it). True when deleted."""
        ...
