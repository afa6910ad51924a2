"""The one table of allowed status changes, shared by every store.

A terminal status is never left. `running -> pending` is the hand-back: a graceful shutdown or a
recovered lease puts the run back in the queue, to resume from its last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runplane.core.errors import InvalidTransition, ThreadBusy
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    CancelAction,
    Json,
    MultitaskStrategy,
    Outcome,
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
