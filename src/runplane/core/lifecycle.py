"""The one table of allowed status changes, shared by every store.

A terminal status is never left. `running -> pending` is the hand-back: a graceful shutdown or a
recovered lease puts the run back in the queue, to resume from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from runplane.core.errors import (
    AssistantChanged,
    CancelRequested,
    InvalidTransition,
    LeaseLost,
    ThreadBusy,
    ThreadReserved,
)
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    AssistantSeen,
    CancelAction,
    Json,
    MultitaskStrategy,
    Outcome,
    Run,
    RunStatus,
    ThreadStatus,
)

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    # A pending run cancelled before it starts never executes: it goes straight to interrupted.
    "pending": frozenset({"running", "interrupted"}),
    "running": frozenset({"success", "error", "timeout", "interrupted", "pending"}),
    "success": frozenset(),
    "error": frozenset(),
    "timeout": frozenset(),
    "interrupted": frozenset(),
}


def can_transition(current: RunStatus, new: RunStatus) -> bool:
    return new in RUN_TRANSITIONS[current]


def check_transition(run_id: str, current: RunStatus, new: RunStatus) -> None:
    """Raise `InvalidTransition` unless `current -> new` is allowed."""
    if not can_transition(current, new):
        raise InvalidTransition(f"run {run_id}: {current} -> {new} is not allowed")


def thread_status_after(run_status: RunStatus, *, has_next: bool = False) -> ThreadStatus:
    """The one rule for a thread's status once a run ended with `run_status` (and no other run is
    active: `thread_status_with_active` makes it `busy` then).

    As LangGraph's server sets it: errors leave the thread `error`; a run that stopped with tasks
    left (`interrupt()`, `interrupt_before`, or a cancel mid-way) leaves it `interrupted`, waiting
    for a `Command(resume=...)`; anything else leaves it `idle`.
    """
    if run_status in ("error", "timeout"):
        return "error"
    if run_status in ("success", "interrupted") and has_next:
        return "interrupted"
    return "idle"


def thread_status_with_active(ended_outcome: ThreadStatus, active_left: bool) -> ThreadStatus:
    """A thread stays `busy` while another run is pending or running on it."""
    return "busy" if active_left else ended_outcome


@dataclass(frozen=True, slots=True)
class ThreadSettlement:
    """What a run leaving its thread's active set does to the thread, applied by every store in the
    transaction that moves the run."""

    #: The thread's status once no other run is active on it (`busy` while one is).
    status: ThreadStatus
    #: Whether the thread's `error` is rewritten. A run's *end* rewrites it (LangGraph's server
    #: sets it with every run's end); a pending run leaving the queue (cancel, delete) leaves it.
    sets_error: bool = False
    #: The thread's `error` when `sets_error`: the ended run's error if it left the thread in error.
    error: str | None = None


def _ended(thread_status: ThreadStatus, run_error: str | None) -> ThreadSettlement:
    return ThreadSettlement(
        thread_status, sets_error=True, error=run_error if thread_status == "error" else None
    )


#: A pending run that left the queue without running: the thread goes idle, its error stays.
QUEUE_LEFT = ThreadSettlement("idle")


# --- cancel --------------------------------------------------------------------------------------

CancelStep = Literal["settled", "delete", "interrupt", "request"]


@dataclass(frozen=True, slots=True)
class CancelPlan:
    """How a cancel request changes a run (see `cancel_plan`)."""

    #: `settled`: already terminal, nothing changes; `delete`: a pending run rolled back is removed;
    #: `interrupt`: a pending run ends `interrupted` at once; `request`: a running run gets a
    #: durable request its worker performs.
    step: CancelStep
    #: The cancel action to record on the run: set for `interrupt`, and for `request` unless the run
    #: already carries a `rollback` request (never downgraded).
    cancel_action: CancelAction | None = None
    #: What happens to the thread (`delete` and `interrupt` only).
    thread: ThreadSettlement | None = None

    @property
    def settled(self) -> bool:
        """Whether the run is settled once the plan is applied (no worker needs to act)."""
        return self.step != "request"

    @property
    def webhook_due(self) -> bool:
        """Whether the run ends here, so its webhook goes in the outbox in the same transaction."""
        return self.step == "interrupt"


def cancel_plan(status: RunStatus, current_action: CancelAction | None, action: CancelAction) -> CancelPlan:
    """Decide how `action` cancels a run in `status` that carries `current_action`.

    A pending run never executes: rolled back it is deleted, interrupted it ends at once. A running
    run gets a durable request; a `rollback` request is never downgraded to `interrupt`.
    """
    if status not in ACTIVE_RUN_STATUSES:
        return CancelPlan("settled")
    if status == "pending":
        if action == "rollback":
            return CancelPlan("delete", thread=QUEUE_LEFT)
        return CancelPlan("interrupt", cancel_action=action, thread=QUEUE_LEFT)
    # A rollback request already recorded stays: nothing to write.
    return CancelPlan("request", cancel_action=None if current_action == "rollback" else action)


# --- claim ---------------------------------------------------------------------------------------


def run_is_due(not_before: datetime | None, now: datetime) -> bool:
    """Whether a run may start at `now` (`after_seconds`; `not_before` itself is due)."""
    return not_before is None or not_before <= now


def head_is_claimable(not_before: datetime | None, thread_has_running: bool, now: datetime) -> bool:
    """Whether the oldest pending run of a thread (its queue head) may be claimed at `now`: no run of
    its thread is running (one run at a time, FIFO per thread) and it is due. Every store's claim
    applies it (in SQL on SQLite and PostgreSQL), and so does the look at the queue that a claim
    (`Claimed.more`) and a finish (`Finished.next_claimable`) report in the same transaction."""
    return not thread_has_running and run_is_due(not_before, now)


def starts_at_admission(
    active: Iterable[tuple[str, RunStatus]],
    cancel_pending: Iterable[str],
    not_before: datetime | None,
    now: datetime,
) -> bool:
    """Whether a run being admitted is claimed by its admission (`NewRun.claim_for`): it would be
    its thread's queue head at once, claimable at `now`. So the thread keeps no active run once the
    admission cancelled its pending ones (`admission_plan`; a running run asked to stop still
    runs), and the run is due. Then the claim a worker would make just after is made by the
    admission, in its transaction: the same state, one transaction and one wake-up fewer."""
    cancelled = set(cancel_pending)
    left = [run_id for run_id, status in active if status in ACTIVE_RUN_STATUSES and run_id not in cancelled]
    return not left and run_is_due(not_before, now)


# --- finish --------------------------------------------------------------------------------------


def yields_to_cancel(outcome: Outcome) -> bool:
    """Whether a cancel request on the run wins over ending it with `outcome`: it does, unless the
    run ends interrupted (which is how the cancel path itself ends it)."""
    return outcome.status != "interrupted"


def finish_plan(
    run_id: str, status: RunStatus, current_action: CancelAction | None, outcome: Outcome
) -> ThreadSettlement:
    """Check that the worker holding a run in `status` may end it with `outcome`, and say what that
    does to the thread.

    Raises:
        CancelRequested: a cancel request must win: the worker takes the cancel path instead.
        InvalidTransition: `status -> outcome.status` is not allowed.
    """
    if current_action is not None and yields_to_cancel(outcome):
        raise CancelRequested(current_action)
    check_transition(run_id, status, outcome.status)
    return _ended(outcome.thread_status, outcome.error)


# --- recovery ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """How a run whose worker was lost (its lease expired) is settled (see `recovery_plan`)."""

    #: `pending` (back in the queue at its place, to resume), `interrupted` or `error`.
    status: RunStatus
    #: The run's `error` afterwards (the one it had, unless it ends in error).
    error: str | None
    #: What happens to the thread; None when the run goes back to the queue (the thread stays busy).
    thread: ThreadSettlement | None

    @property
    def ends_run(self) -> bool:
        """Whether the run ends (it gets `ended_at`, and its webhook goes in the outbox)."""
        return self.thread is not None


def recovery_plan(run: Run, max_attempts: int, now: datetime) -> RecoveryPlan:
    """Decide how to settle `run`, whose worker stopped renewing its lease.

    A run with an interrupt request ends `interrupted` (its worker would have done so); a run that
    used its `max_attempts` ends in error; any other goes back to the queue, a rollback request
    staying on it for the next claimer to perform. A recovered interrupt is the end of a run, so it
    clears the thread's error as a finished run does (LangGraph's server sets `error` with every
    run's end); the run's own error is kept.

    Raises:
        LeaseLost: the run's lease is still valid.
    """
    if run.lease_expires_at is None or run.lease_expires_at >= now:
        raise LeaseLost(f"run {run.run_id} lease is still valid")
    if run.cancel_action == "interrupt":
        return RecoveryPlan("interrupted", run.error, _ended(thread_status_after("interrupted"), run.error))
    if run.attempt >= max_attempts:
        error = f"WorkerLost: lease expired on attempt {run.attempt} of {max_attempts}"
        return RecoveryPlan("error", error, _ended(thread_status_after("error"), error))
    return RecoveryPlan("pending", run.error, None)


# --- admission ---------------------------------------------------------------------------------


def admission_plan(
    strategy: MultitaskStrategy, active: Iterable[tuple[str, RunStatus]]
) -> tuple[list[str], list[str], CancelAction | None]:
    """Decide how a new run is admitted on a thread whose active runs are `active`.

    Pure, so that every store applies the same rule inside its own transaction.

    Args:
        strategy: the new run's multitask strategy.
        active: `(run_id, status)` of the thread's pending and running runs.

    Returns:
        `(cancel_running, cancel_pending, action)`: running runs that get a durable cancel
        request, pending runs cancelled outright, and the cancel action for both.

    Raises:
        ThreadBusy: `reject` on a thread with an active run.
    """
    runs = [(run_id, status) for run_id, status in active if status in ACTIVE_RUN_STATUSES]
    if not runs or strategy == "enqueue":
        return [], [], None
    if strategy == "reject":
        raise ThreadBusy(f"thread has an active run ({runs[0][0]}); multitask_strategy is reject")
    action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
    running = [run_id for run_id, status in runs if status == "running"]
    pending = [run_id for run_id, status in runs if status == "pending"]
    return running, pending, action


def check_assistant_unchanged(
    assistant_id: str, seen: AssistantSeen | None, current: AssistantSeen | None
) -> None:
    """Admit a run built from the assistant `seen` only while that is still its current version
    (`current`: the store's, None when the assistant is gone). No `seen`: nothing to check.

    Raises:
        AssistantChanged: it was patched, deleted, or deleted and created again.
    """
    if seen is not None and seen != current:
        raise AssistantChanged(f"assistant {assistant_id} changed since it was read")


def thread_config_after_admission(current: Json, run_config: Json) -> Json:
    """The config a thread shows once a run with `run_config` is admitted on it, as LangGraph's
    server keeps it: the run's keys over the thread's, except `configurable`, where the thread's
    own win over the run's defaults (a run's configurable values stay the run's)."""
    return {
        **current,
        **run_config,
        "configurable": {**(run_config.get("configurable") or {}), **(current.get("configurable") or {})},
    }


# --- thread state updates ----------------------------------------------------------------------


def reservation_holds(reserved_until: datetime | None, now: datetime) -> bool:
    """Whether a state update's hold on a thread is still valid (a crashed holder's expires)."""
    return reserved_until is not None and reserved_until > now


def check_not_reserved(thread_id: str, reserved_until: datetime | None, now: datetime) -> None:
    """Refuse a run's admission while a state update holds its thread, so that the run's execution
    and the update's checkpoint write never interleave. Every store calls it in its admission
    transaction, under the same lock as `reserve_plan`.

    Raises:
        ThreadReserved: the hold is valid; the manager waits for its end and admits the run then.
    """
    if reservation_holds(reserved_until, now):
        raise ThreadReserved(f"thread {thread_id} is held by a state update")


def reserve_plan(has_active_run: bool, reserved_until: datetime | None, now: datetime) -> None:
    """Check that a state update may hold a thread: no run is active on it and no other update
    holds it (an expired hold is taken over).

    Raises:
        ThreadBusy: a pending or running run, or another update's valid hold.
    """
    if has_active_run:
        raise ThreadBusy("thread is busy: wait for its run to end before updating its state")
    if reservation_holds(reserved_until, now):
        raise ThreadBusy("thread is busy: another state update is in progress")


def thread_status_of_state(has_next: bool) -> ThreadStatus:
    """A thread's status once a state update wrote its checkpoint: as if a run had just ended
    there (`interrupted` while tasks are left to run, else `idle`), by the one rule
    `thread_status_after`."""
    return thread_status_after("success", has_next=has_next)


# --- crons ---------------------------------------------------------------------------------------


def cron_is_due(
    enabled: bool, next_run_date: datetime | None, end_time: datetime | None, now: datetime
) -> bool:
    """Whether a cron has a slot to fire now: enabled, its next slot reached, and not past its end."""
    if not enabled or next_run_date is None or next_run_date > now:
        return False
    return end_time is None or next_run_date <= end_time


def may_claim_slot(stored_next: datetime | None, enabled: bool, slot: datetime) -> bool:
    """The conditional update that makes a slot fire once: a scheduler may move the cron past `slot`
    only while the cron still waits for exactly that slot (nobody fired it, nobody rescheduled it)."""
    return enabled and stored_next is not None and stored_next == slot


def cron_next_slot_after_fire(next_after_now: datetime, end_time: datetime | None) -> datetime | None:
    """The slot a cron waits for once it fired: the first one after *now*, not after the slot that
    fired, so a cron that missed several slots (downtime) fires once to catch up, not once per
    missed slot. None when that slot is past the cron's end: it never fires again."""
    if end_time is not None and next_after_now > end_time:
        return None
    return next_after_now


# --- webhooks ------------------------------------------------------------------------------------


def webhook_url(run: Run) -> str | None:
    """Where a run's completion is POSTed: its `webhook`, once the run is terminal."""
    url = run.kwargs.webhook
    if not run.is_terminal or not url:
        return None
    return url


def _error_of(run: Run) -> Json:
    text = run.error or ""
    kind, sep, message = text.partition(": ")
    if sep and kind.replace(".", "").replace("_", "").isalnum():
        return {"error": kind, "message": message}
    if run.status == "timeout":
        return {"error": "TimeoutError", "message": text or "run timed out"}
    return {"error": "Error", "message": text}


def webhook_payload(run: Run, values: Json | None) -> Json:
    """The body LangGraph's server POSTs when a run ends: the run's record, its status and times,
    and the thread's final values (`error` too when it failed). `webhook_sent_at` is added at
    each delivery. Pure, so every store writes the same outbox row in its terminal transaction."""
    payload: Json = {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "status": run.status,
        "metadata": run.metadata,
        "multitask_strategy": run.multitask_strategy,
        "kwargs": run.kwargs.to_json(),
        "run_started_at": run.started_at.isoformat() if run.started_at else None,
        "run_ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "values": values,
    }
    if run.status in ("error", "timeout"):
        payload["error"] = _error_of(run)
    return payload


def webhook_retry_delay(attempts: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next delivery attempt after `attempts` failed ones: exponential from
    `base`, at most `cap`, spread by `jitter` in [0, 1) over its upper half so that receivers that
    come back are not hit by every sender at once."""
    delay = min(cap, base * float(2 ** max(0, attempts - 1)))
    return delay * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))
