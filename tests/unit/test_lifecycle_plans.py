"""The pure run rules every store applies: cancel, finish and recovery plans."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from runplane.core.errors import CancelRequested, InvalidTransition, LeaseLost
from runplane.core.lifecycle import QUEUE_LEFT, ThreadSettlement, cancel_plan, finish_plan, recovery_plan
from runplane.core.models import Outcome, Run

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def held(**changes: object) -> Run:
    run = Run(
        run_id="r1",
        thread_id="t1",
        assistant_id="a1",
        owner="u",
        status="running",
        multitask_strategy="enqueue",
        created_at=NOW,
        updated_at=NOW,
        attempt=1,
        lease_owner="w1",
        lease_expires_at=NOW - timedelta(seconds=1),
    )
    return replace(run, **changes)  # type: ignore[arg-type]


def test_a_settled_run_is_not_cancelled_again() -> None:
    plan = cancel_plan("success", None, "interrupt")
    assert (plan.step, plan.settled, plan.webhook_due, plan.thread) == ("settled", True, False, None)


def test_a_pending_run_rolled_back_is_deleted_and_keeps_the_thread_error() -> None:
    plan = cancel_plan("pending", None, "rollback")
    assert (plan.step, plan.settled, plan.webhook_due) == ("delete", True, False)
    assert plan.thread == QUEUE_LEFT == ThreadSettlement("idle", sets_error=False)


def test_a_pending_run_interrupted_ends_at_once_with_its_webhook() -> None:
    plan = cancel_plan("pending", None, "interrupt")
    assert (plan.step, plan.cancel_action, plan.settled, plan.webhook_due) == (
        "interrupt",
        "interrupt",
        True,
        True,
    )
    assert plan.thread == QUEUE_LEFT


@pytest.mark.parametrize(
    ("current", "action", "recorded"),
    [
        (None, "interrupt", "interrupt"),
        ("interrupt", "rollback", "rollback"),
        ("rollback", "interrupt", None),
    ],
)
def test_a_running_run_gets_a_request_never_downgraded(
    current: str | None, action: str, recorded: str | None
) -> None:
    plan = cancel_plan("running", current, action)  # type: ignore[arg-type]
    assert (plan.step, plan.cancel_action, plan.settled, plan.thread) == ("request", recorded, False, None)


def test_finish_rewrites_the_thread_error_only_when_the_thread_is_left_in_error() -> None:
    failed = finish_plan("r1", "running", None, Outcome("error", "error", error="E: x"))
    assert failed == ThreadSettlement("error", sets_error=True, error="E: x")
    done = finish_plan("r1", "running", None, Outcome("success", "idle", error="ignored"))
    assert done == ThreadSettlement("idle", sets_error=True, error=None)


def test_finish_loses_to_a_cancel_request_unless_it_interrupts() -> None:
    with pytest.raises(CancelRequested):
        finish_plan("r1", "running", "rollback", Outcome("success", "idle"))
    assert finish_plan("r1", "running", "interrupt", Outcome("interrupted", "idle")).status == "idle"


def test_finish_checks_the_transition() -> None:
    with pytest.raises(InvalidTransition):
        finish_plan("r1", "pending", None, Outcome("success", "idle"))


def test_recovery_refuses_a_valid_lease() -> None:
    with pytest.raises(LeaseLost):
        recovery_plan(held(lease_expires_at=NOW), 3, NOW)
    with pytest.raises(LeaseLost):
        recovery_plan(held(lease_expires_at=None), 3, NOW)


def test_recovery_of_an_interrupt_ends_the_run_and_clears_the_thread_error() -> None:
    plan = recovery_plan(held(cancel_action="interrupt", error="kept"), 3, NOW)
    assert (plan.status, plan.error, plan.ends_run) == ("interrupted", "kept", True)
    assert plan.thread == ThreadSettlement("idle", sets_error=True, error=None)


def test_recovery_after_the_last_attempt_ends_in_error() -> None:
    plan = recovery_plan(held(attempt=3, cancel_action="rollback"), 3, NOW)
    message = "WorkerLost: lease expired on attempt 3 of 3"
    assert (plan.status, plan.error, plan.ends_run) == ("error", message, True)
    assert plan.thread == ThreadSettlement("error", sets_error=True, error=message)


def test_recovery_before_the_last_attempt_requeues() -> None:
    plan = recovery_plan(held(attempt=2, cancel_action="rollback"), 3, NOW)
    assert (plan.status, plan.error, plan.ends_run, plan.thread) == ("pending", None, False, None)
