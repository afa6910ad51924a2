"""The one table of allowed status changes, shared by every store.

A terminal status is never left. `running -> pending` is the hand-back: a graceful shutdown or a
recovered lease puts the run back in the queue, to resume from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from runplane.core.errors import InvalidTransition, ThreadBusy
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
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


def thread_status_after(run_status: RunStatus, *, has_interrupts: bool = False) -> ThreadStatus:
    """The thread's status once a run ended with `run_status` (and no other run is active).

    A graph that stopped at `interrupt()` ends its run `success` and leaves the thread `interrupted`,
    waiting for a `Command(resume=...)`.
    """
    if run_status in ("error", "timeout"):
        return "error"
    if run_status == "success" and has_interrupts:
        return "interrupted"
    return "idle"


def thread_status_with_active(ended_outcome: ThreadStatus, active_left: bool) -> ThreadStatus:
    """A thread stays `busy` while another run is pending or running on it."""
    return "busy" if active_left else ended_outcome


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


def thread_config_after_admission(current: Json, run_config: Json) -> Json:
    """The config a thread shows once a run with `run_config` is admitted on it, as LangGraph's
    server keeps it: the run's keys over the thread's, except `configurable`, where the thread's
    own win over the run's defaults (a run's configurable values stay the run's)."""
    return {
        **current,
        **run_config,
        "configurable": {**(run_config.get("configurable") or {}), **(current.get("configurable") or {})},
    }


def thread_error_after_run(outcome: Outcome) -> str | None:
    """A thread's `error` after a run ends: the run's error when it left the thread in error,
    cleared otherwise (as LangGraph's server sets it with every run's end)."""
    return outcome.error if outcome.thread_status == "error" else None


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
    url = run.kwargs.get("webhook")
    if not run.is_terminal or not isinstance(url, str) or not url:
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
        "kwargs": run.kwargs,
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
