"""The status table and the admission rule that every store applies."""

from __future__ import annotations

import pytest

from runplane.core.errors import InvalidTransition, ThreadBusy
from runplane.core.lifecycle import (
    RUN_TRANSITIONS,
    admission_plan,
    can_transition,
    check_transition,
    thread_status_after,
    thread_status_with_active,
)
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    MultitaskStrategy,
    RunStatus,
)


def test_the_table_covers_every_status() -> None:
    assert set(RUN_TRANSITIONS) == set(RUN_STATUSES)
    assert ACTIVE_RUN_STATUSES | TERMINAL_RUN_STATUSES == set(RUN_STATUSES)
    assert not ACTIVE_RUN_STATUSES & TERMINAL_RUN_STATUSES


@pytest.mark.parametrize("status", sorted(TERMINAL_RUN_STATUSES))
def test_terminal_statuses_are_never_left(status: RunStatus) -> None:
    for new in RUN_STATUSES:
        assert not can_transition(status, new)
        with pytest.raises(InvalidTransition, match=f"{status} -> {new}"):
            check_transition("r1", status, new)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "running", True),
        ("pending", "interrupted", True),  # cancelled before it started
        ("pending", "success", False),
        ("pending", "error", False),
        ("pending", "pending", False),
        ("running", "success", True),
        ("running", "error", True),
        ("running", "timeout", True),
        ("running", "interrupted", True),
        ("running", "pending", True),  # handed back: release or recovered lease
        ("running", "running", False),
    ],
)
def test_active_transitions(current: RunStatus, new: RunStatus, allowed: bool) -> None:
    assert can_transition(current, new) is allowed
    if allowed:
        check_transition("r1", current, new)
    else:
        with pytest.raises(InvalidTransition):
            check_transition("r1", current, new)


@pytest.mark.parametrize(
    ("status", "has_next", "expected"),
    [
        ("success", False, "idle"),
        ("success", True, "interrupted"),
        ("error", False, "error"),
        ("error", True, "error"),
        ("timeout", False, "error"),
        ("interrupted", False, "idle"),
        # A cancel mid-way leaves tasks to resume: the executor and every store use this one rule.
        ("interrupted", True, "interrupted"),
    ],
)
def test_thread_status_after(status: RunStatus, has_next: bool, expected: str) -> None:
    assert thread_status_after(status, has_next=has_next) == expected


def test_thread_status_after_defaults_to_no_interrupts() -> None:
    assert thread_status_after("success") == "idle"


def test_a_thread_with_another_active_run_stays_busy() -> None:
    assert thread_status_with_active("error", True) == "busy"
    assert thread_status_with_active("error", False) == "error"
    assert thread_status_with_active("idle", False) == "idle"


@pytest.mark.parametrize("strategy", ["reject", "interrupt", "rollback", "enqueue"])
def test_no_active_run_admits_directly(strategy: MultitaskStrategy) -> None:
    assert admission_plan(strategy, []) == ([], [], None)
    # Terminal runs in the input are ignored: only active ones count.
    assert admission_plan(strategy, [("old", "success"), ("older", "interrupted")]) == ([], [], None)


def test_enqueue_never_cancels() -> None:
    assert admission_plan("enqueue", [("r1", "running"), ("r2", "pending")]) == ([], [], None)


@pytest.mark.parametrize("status", ["pending", "running"])
def test_reject_on_an_active_run_is_thread_busy(status: RunStatus) -> None:
    with pytest.raises(ThreadBusy, match="r1"):
        admission_plan("reject", [("done", "success"), ("r1", status)])


@pytest.mark.parametrize(("strategy", "action"), [("interrupt", "interrupt"), ("rollback", "rollback")])
def test_interrupt_and_rollback_cancel_every_active_run(strategy: MultitaskStrategy, action: str) -> None:
    active: list[tuple[str, RunStatus]] = [
        ("r1", "running"),
        ("r2", "pending"),
        ("r0", "success"),
        ("r3", "pending"),
    ]
    assert admission_plan(strategy, active) == (["r1"], ["r2", "r3"], action)
    assert admission_plan(strategy, [("p", "pending")]) == ([], ["p"], action)
    running: list[tuple[str, RunStatus]] = [("x", "running")]
    assert admission_plan(strategy, iter(running)) == (["x"], [], action)
