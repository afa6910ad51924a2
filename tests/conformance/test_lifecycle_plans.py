"""Every store applies the run rules of `core.lifecycle` as planned: cancel, finish, discard and
recovery, checked against the pure plan functions, on a thread that carries an earlier run's error
(so that whether each path keeps or rewrites the thread's `error` shows)."""

from __future__ import annotations

import pytest

from runplane.core.errors import CancelRequested
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    ThreadSettlement,
    cancel_plan,
    finish_plan,
    recovery_plan,
)
from runplane.core.models import CancelAction, Outcome, RunFilter, Thread
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, add_run, claim, outcome, running_run

EARLIER = "ValueError: the earlier run failed"
HOOKED = {"kwargs": {"graph_id": "agent", "webhook": "https://hooks.example.com/done"}}


async def thread_that_failed(store: Store) -> None:
    """Thread t1, whose last run ended in error: it carries that error."""
    run = await running_run(store, "r0", "t1")
    await store.finish_run("r0", run.attempt, outcome("error", "error", error=EARLIER))
    assert (await store.get_thread("t1", OWNER)).error == EARLIER


def assert_settled(thread: Thread, settlement: ThreadSettlement, *, active_left: bool = False) -> None:
    assert thread.status == ("busy" if active_left else settlement.status)
    assert thread.error == (settlement.error if settlement.sets_error else EARLIER)


@pytest.mark.parametrize("cancel_action", [None, "interrupt", "rollback"])
@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_recovery_applies_the_plan(
    store: Store, clock: FakeClock, cancel_action: CancelAction | None, max_attempts: int
) -> None:
    await thread_that_failed(store)
    await add_run(store, "r1", "t1", **HOOKED)
    claimed = await claim(store)
    if cancel_action is not None:
        await store.request_cancel("r1", OWNER, cancel_action)
    before = await store.get_run("r1", OWNER)
    clock.advance(31)
    plan = recovery_plan(before, max_attempts, clock.now())
    recovered = await store.recover_run("r1", claimed.attempt, max_attempts)
    assert (recovered.status, recovered.error) == (plan.status, plan.error)
    assert recovered.ended_at == (clock.now() if plan.ends_run else None)
    assert (recovered.lease_owner, recovered.lease_expires_at) == (None, None)
    assert recovered.cancel_action == before.cancel_action
    thread = await store.get_thread("t1", OWNER)
    if plan.thread is None:
        assert (thread.status, thread.error) == ("busy", EARLIER)
    else:
        assert_settled(thread, plan.thread)
    assert len(await store.list_webhooks()) == (1 if plan.ends_run else 0)


async def test_recovery_to_interrupted_ends_the_run_as_a_finish_would(store: Store, clock: FakeClock) -> None:
    """The drift the plan removed: a recovered interrupt is a run's end, so the thread's error is
    cleared as a finished run clears it (LangGraph's server rewrites `error` with every run's end),
    and the run keeps its own error field."""
    await thread_that_failed(store)
    await add_run(store, "r1", "t1")
    claimed = await claim(store)
    await store.request_cancel("r1", OWNER, "interrupt")
    clock.advance(31)
    recovered = await store.recover_run("r1", claimed.attempt, max_attempts=3)
    assert (recovered.status, recovered.error) == ("interrupted", None)
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.error) == ("idle", None)


@pytest.mark.parametrize("started", [False, True])
@pytest.mark.parametrize("earlier_action", [None, "interrupt", "rollback"])
@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancel_applies_the_plan(
    store: Store,
    clock: FakeClock,
    started: bool,
    earlier_action: CancelAction | None,
    action: CancelAction,
) -> None:
    await thread_that_failed(store)
    await add_run(store, "r1", "t1", **HOOKED)
    if started:
        await claim(store)
    if earlier_action is not None:
        await store.request_cancel("r1", OWNER, earlier_action)
    if earlier_action is not None and not started:
        return  # the pending run is already settled (or gone); `test_cancel_of_a_settled_run` covers it
    before = await store.get_run("r1", OWNER)
    clock.advance(1)
    plan = cancel_plan(before.status, before.cancel_action, action)
    result = await store.request_cancel("r1", OWNER, action)
    assert (result.settled, result.deleted) == (plan.settled, plan.step == "delete")
    if plan.step == "delete":
        assert result.run == before
        assert await store.list_runs("t1", OWNER, _all_runs()) == [await store.get_run("r0", OWNER)]
    elif plan.step == "interrupt":
        assert (result.run.status, result.run.cancel_action) == ("interrupted", plan.cancel_action)
        assert result.run.ended_at == clock.now()
    else:
        expected = plan.cancel_action if plan.cancel_action is not None else before.cancel_action
        assert (result.run.status, result.run.cancel_action) == ("running", expected)
        assert result.run.updated_at == (clock.now() if plan.cancel_action is not None else before.updated_at)
    thread = await store.get_thread("t1", OWNER)
    if plan.thread is None:
        assert (thread.status, thread.error) == ("busy", EARLIER)
    else:
        assert plan.thread == QUEUE_LEFT
        assert_settled(thread, plan.thread)
    assert len(await store.list_webhooks()) == (1 if plan.webhook_due else 0)


async def test_cancel_of_a_settled_run_changes_nothing(store: Store) -> None:
    await thread_that_failed(store)
    before = await store.get_run("r0", OWNER)
    assert cancel_plan(before.status, before.cancel_action, "interrupt").step == "settled"
    result = await store.request_cancel("r0", OWNER, "interrupt")
    assert (result.run, result.settled, result.deleted) == (before, True, False)
    assert (await store.get_thread("t1", OWNER)).error == EARLIER


@pytest.mark.parametrize(
    "ending",
    [
        outcome("success", "idle"),
        outcome("success", "interrupted"),
        outcome("error", "error", error="KeyError: again"),
        outcome("timeout", "error", error="TimeoutError: late"),
        outcome("interrupted", "idle"),
    ],
)
async def test_finish_applies_the_plan(store: Store, ending: Outcome) -> None:
    await thread_that_failed(store)
    run = await running_run(store, "r1", "t1")
    settlement = finish_plan("r1", run.status, run.cancel_action, ending)
    finished = await store.finish_run("r1", run.attempt, ending)
    assert (finished.status, finished.error) == (ending.status, ending.error)
    assert_settled(await store.get_thread("t1", OWNER), settlement)


async def test_finish_with_a_run_queued_behind_keeps_the_thread_busy(store: Store) -> None:
    await thread_that_failed(store)
    run = await running_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    ending = outcome("error", "error", error="KeyError: again")
    settlement = finish_plan("r1", run.status, run.cancel_action, ending)
    await store.finish_run("r1", run.attempt, ending)
    assert_settled(await store.get_thread("t1", OWNER), settlement, active_left=True)


async def test_finish_refused_by_the_plan_is_refused_by_the_store(store: Store) -> None:
    run = await running_run(store, "r1", "t1")
    cancel = await store.request_cancel("r1", OWNER, "rollback")
    with pytest.raises(CancelRequested) as planned:
        finish_plan("r1", cancel.run.status, cancel.run.cancel_action, outcome())
    with pytest.raises(CancelRequested) as applied:
        await store.finish_run("r1", run.attempt, outcome())
    assert applied.value.action == planned.value.action == "rollback"


async def test_discard_leaves_the_thread_as_if_the_run_never_ran(store: Store) -> None:
    await thread_that_failed(store)
    run = await running_run(store, "r1", "t1")
    await store.discard_run("r1", run.attempt)
    assert_settled(await store.get_thread("t1", OWNER), QUEUE_LEFT)


def _all_runs() -> RunFilter:
    return RunFilter(limit=100)
