"""Worker primitives: claim, renew, record_progress, finish, discard, release, expired, recover."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runplane.core.errors import InvalidTransition, LeaseLost, NotFound
from runplane.core.models import RunStatus, ThreadStatus, TokenUsage
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import (
    OWNER,
    add_run,
    claim,
    make_thread,
    outcome,
    running_run,
    usage,
)

# -- claim ------------------------------------------------------------------------------------------


async def test_claim_with_nothing_pending_returns_none(store: Store) -> None:
    assert await store.claim_run("w1", 30) is None
    await make_thread(store, "t1")
    assert await store.claim_run("w1", 30) is None


async def test_claim_takes_a_lease(store: Store, clock: FakeClock) -> None:
    created = await add_run(store, "r1", "t1")
    clock.advance(1.5)
    run = await claim(store, "worker-a", 12.5)
    assert run.run_id == "r1"
    assert run.status == "running"
    assert run.attempt == 1
    assert run.lease_owner == "worker-a"
    assert run.lease_expires_at == clock.now() + timedelta(seconds=12.5)
    assert run.started_at == run.updated_at == clock.now()
    assert run.created_at == created.created_at
    assert run.ended_at is None
    assert await store.get_run("r1", OWNER) == run
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.updated_at) == ("busy", clock.now())
    assert await store.claim_run("w2", 30) is None


async def test_claim_is_fifo_across_threads(store: Store, clock: FakeClock) -> None:
    for run_id, thread_id in [("r-c", "t3"), ("r-a", "t1"), ("r-b", "t2")]:
        await add_run(store, run_id, thread_id)
    assert [(await claim(store)).run_id for _ in range(3)] == ["r-c", "r-a", "r-b"]
    assert await store.claim_run("w1", 30) is None


async def test_claim_runs_a_thread_one_run_at_a_time(store: Store) -> None:
    await add_run(store, "a1", "ta")
    await add_run(store, "a2", "ta")
    await add_run(store, "b1", "tb")
    first = await claim(store)
    assert first.run_id == "a1"
    # a2 is older than b1 but its thread is busy with a1.
    assert (await claim(store)).run_id == "b1"
    assert await store.claim_run("w1", 30) is None
    await store.finish_run("a1", first.attempt, outcome())
    assert (await store.get_thread("ta", OWNER)).status == "busy"  # a2 is still pending
    assert (await claim(store)).run_id == "a2"


async def test_claim_waits_for_not_before(store: Store, clock: FakeClock) -> None:
    await add_run(store, "later", "t1", not_before=clock.now() + timedelta(seconds=10))
    await add_run(store, "now", "t2")
    assert (await claim(store)).run_id == "now"
    assert await store.claim_run("w1", 30) is None
    clock.advance(9.999999)
    assert await store.claim_run("w1", 30) is None
    clock.advance(0.000001)  # due exactly now: not_before is inclusive
    assert (await claim(store)).run_id == "later"


async def test_a_delayed_run_holds_back_later_runs_of_its_thread(store: Store, clock: FakeClock) -> None:
    await add_run(store, "delayed", "t1", not_before=clock.now() + timedelta(seconds=5))
    await add_run(store, "ready", "t1")
    await add_run(store, "other", "t2")
    assert (await claim(store)).run_id == "other"
    assert await store.claim_run("w1", 30) is None
    clock.advance(5)
    assert (await claim(store)).run_id == "delayed"


async def test_a_past_not_before_is_due(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1", not_before=clock.now() - timedelta(seconds=1))
    assert (await claim(store)).run_id == "r1"


async def test_claimed_cancelled_or_deleted_runs_leave_the_queue(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await add_run(store, "r2", "t2")
    await add_run(store, "r3", "t3")
    await store.request_cancel("r1", OWNER, "interrupt")
    await store.delete_run("r2", OWNER)
    assert (await claim(store)).run_id == "r3"
    assert await store.claim_run("w1", 30) is None


# -- renew ------------------------------------------------------------------------------------------


async def test_renew_extends_the_lease_from_now(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(20)
    assert await store.renew_lease("r1", running.attempt, "w1", 45) is None
    run = await store.get_run("r1", OWNER)
    assert run.lease_expires_at == clock.now() + timedelta(seconds=45)
    # A heartbeat is not a change of the run: updated_at stays.
    assert run.updated_at == running.updated_at
    assert (run.status, run.attempt, run.lease_owner) == ("running", 1, "w1")


async def test_renew_is_fenced(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(LeaseLost):
        await store.renew_lease("r1", running.attempt + 1, "w1", 30)
    with pytest.raises(LeaseLost):
        await store.renew_lease("r1", running.attempt, "someone-else", 30)
    with pytest.raises(LeaseLost):
        await store.renew_lease("unknown", 1, "w1", 30)
    await store.finish_run("r1", running.attempt, outcome())
    with pytest.raises(LeaseLost):
        await store.renew_lease("r1", running.attempt, "w1", 30)


async def test_renew_of_a_pending_run_is_lease_lost(store: Store) -> None:
    await add_run(store, "r1", "t1")
    with pytest.raises(LeaseLost):
        await store.renew_lease("r1", 0, "w1", 30)


# -- record_progress --------------------------------------------------------------------------------


async def test_record_progress(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(1)
    await store.record_progress("r1", running.attempt, model_name="gpt-x", usage=usage(3, 4))
    run = await store.get_run("r1", OWNER)
    assert (run.model_name, run.usage, run.updated_at) == ("gpt-x", usage(3, 4), clock.now())
    clock.advance(1)
    await store.record_progress("r1", running.attempt, usage=usage(5, 6))
    run = await store.get_run("r1", OWNER)
    assert (run.model_name, run.usage, run.updated_at) == ("gpt-x", usage(5, 6), clock.now())
    await store.record_progress("r1", running.attempt, model_name="gpt-y")
    run = await store.get_run("r1", OWNER)
    assert (run.model_name, run.usage) == ("gpt-y", usage(5, 6))
    await store.record_progress("r1", running.attempt)
    assert (await store.get_run("r1", OWNER)).model_name == "gpt-y"


async def test_record_progress_is_fenced(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(LeaseLost):
        await store.record_progress("r1", running.attempt + 1, model_name="m")
    with pytest.raises(LeaseLost):
        await store.record_progress("nope", 1, model_name="m")
    assert (await store.get_run("r1", OWNER)).model_name is None


# -- hold_attempt (the fence of checkpoint writes) -------------------------------------------------


async def test_hold_attempt_admits_the_attempt_that_holds_the_run(store: Store) -> None:
    running = await running_run(store)
    async with store.hold_attempt("r1", running.attempt, 30):
        pass
    assert await store.get_run("r1", OWNER) == running  # a hold changes nothing


async def test_hold_attempt_refuses_a_stale_or_ended_attempt(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(31)
    await store.recover_run("r1", running.attempt, max_attempts=3)
    with pytest.raises(LeaseLost):  # recovered: pending, no attempt holds it
        async with store.hold_attempt("r1", running.attempt, 30):
            raise AssertionError("a recovered attempt entered the fence")
    again = await claim(store)
    with pytest.raises(LeaseLost):  # a newer attempt holds it
        async with store.hold_attempt("r1", running.attempt, 30):
            raise AssertionError("a stale attempt entered the fence")
    await store.finish_run("r1", again.attempt, outcome())
    with pytest.raises(LeaseLost):  # ended
        async with store.hold_attempt("r1", again.attempt, 30):
            raise AssertionError("an ended attempt entered the fence")
    with pytest.raises(LeaseLost):
        async with store.hold_attempt("no-such-run", 1, 30):
            raise AssertionError("an unknown run entered the fence")


# -- finish -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "thread_status"),
    [
        ("success", "idle"),
        ("success", "interrupted"),
        ("error", "error"),
        ("timeout", "error"),
        ("interrupted", "idle"),
    ],
)
async def test_finish_run(
    store: Store, clock: FakeClock, status: RunStatus, thread_status: ThreadStatus
) -> None:
    running = await running_run(store)
    clock.advance(3)
    values = {"messages": ["done"]}
    interrupts = {"task": [{"value": 1}]} if thread_status == "interrupted" else {}
    finished = await store.finish_run(
        "r1",
        running.attempt,
        outcome(
            status,
            thread_status,
            error="Boom" if status == "error" else None,
            thread_values=values,
            thread_interrupts=interrupts,
            model_name="m",
            usage=usage(1, 2),
        ),
    )
    assert finished.status == status
    assert finished.error == ("Boom" if status == "error" else None)
    assert (finished.model_name, finished.usage) == ("m", usage(1, 2))
    assert finished.ended_at == finished.updated_at == clock.now()
    assert finished.started_at == running.started_at
    assert (finished.lease_owner, finished.lease_expires_at) == (None, None)
    assert finished.attempt == running.attempt
    assert await store.get_run("r1", OWNER) == finished
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == thread_status
    assert thread.values == values
    assert thread.interrupts == interrupts
    assert thread.updated_at == clock.now()


async def test_finish_keeps_progress_when_the_outcome_has_none(store: Store) -> None:
    running = await running_run(store)
    await store.record_progress("r1", running.attempt, model_name="gpt-x", usage=usage(7, 8))
    finished = await store.finish_run("r1", running.attempt, outcome(model_name=None, usage=None))
    assert (finished.model_name, finished.usage) == ("gpt-x", usage(7, 8))


async def test_finish_usage_replaces_progress_usage(store: Store) -> None:
    running = await running_run(store)
    await store.record_progress("r1", running.attempt, usage=usage(7, 8))
    finished = await store.finish_run("r1", running.attempt, outcome(usage=usage(1, 1)))
    assert finished.usage == usage(1, 1)


async def test_finish_without_values_keeps_the_thread_values(store: Store) -> None:
    await make_thread(store, "t1")
    await store.set_thread_state("t1", OWNER, {"kept": True}, {"old": [1]})
    await add_run(store, "r1", "t1")
    running = await claim(store)
    await store.finish_run("r1", running.attempt, outcome(thread_values=None))
    thread = await store.get_thread("t1", OWNER)
    assert thread.values == {"kept": True}
    assert thread.interrupts == {}  # interrupts always describe the latest run


async def test_finish_with_another_run_queued_keeps_the_thread_busy(store: Store) -> None:
    running = await running_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    await store.finish_run("r1", running.attempt, outcome("error", "error", thread_values={"v": 1}))
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == "busy"
    assert thread.values == {"v": 1}


async def test_finish_is_fenced(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", running.attempt + 1, outcome())
    with pytest.raises(LeaseLost):
        await store.finish_run("nope", 1, outcome())
    await store.finish_run("r1", running.attempt, outcome())
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", running.attempt, outcome("error", "error"))
    assert (await store.get_run("r1", OWNER)).status == "success"


async def test_finish_as_running_is_an_invalid_transition(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(InvalidTransition):
        await store.finish_run("r1", running.attempt, outcome("running", "busy"))
    assert await store.get_run("r1", OWNER) == running


# -- discard / release ------------------------------------------------------------------------------


async def test_discard_deletes_the_run(store: Store, clock: FakeClock) -> None:
    running = await running_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    discarded = await store.discard_run("r1", running.attempt)
    assert discarded.run_id == "r1"
    assert discarded.status == "running"
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)
    assert (await store.get_thread("t1", OWNER)).status == "busy"  # r2 is pending
    assert (await claim(store)).run_id == "r2"


async def test_discard_is_fenced(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(LeaseLost):
        await store.discard_run("r1", running.attempt + 1)
    with pytest.raises(LeaseLost):
        await store.discard_run("nope", 1)
    await add_run(store, "pending", "t2")
    with pytest.raises(LeaseLost):
        await store.discard_run("pending", 0)
    assert (await store.get_run("r1", OWNER)).status == "running"


async def test_release_requeues_at_the_original_place(store: Store, clock: FakeClock) -> None:
    running = await running_run(store, "r1", "t1")
    await add_run(store, "r2", "t2")
    clock.advance(5)
    released = await store.release_run("r1", running.attempt)
    assert released.status == "pending"
    assert (released.lease_owner, released.lease_expires_at) == (None, None)
    assert released.attempt == running.attempt
    assert released.started_at == running.started_at
    assert released.updated_at == clock.now()
    assert released.ended_at is None
    assert await store.get_run("r1", OWNER) == released
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    clock.advance(1)
    # r1 was admitted before r2, so it goes first again.
    again = await claim(store, "w2")
    assert again.run_id == "r1"
    assert again.attempt == running.attempt + 1
    assert again.lease_owner == "w2"
    assert again.started_at == running.started_at  # the first start is kept
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", running.attempt, outcome())


async def test_release_keeps_a_cancel_request(store: Store) -> None:
    running = await running_run(store)
    await store.request_cancel("r1", OWNER, "rollback")
    released = await store.release_run("r1", running.attempt)
    assert released.cancel_action == "rollback"
    again = await claim(store)
    assert await store.renew_lease("r1", again.attempt, "w1", 30) == "rollback"


async def test_release_is_fenced(store: Store) -> None:
    running = await running_run(store)
    with pytest.raises(LeaseLost):
        await store.release_run("r1", running.attempt + 1)
    await store.release_run("r1", running.attempt)
    with pytest.raises(LeaseLost):
        await store.release_run("r1", running.attempt)


# -- expired / recover ------------------------------------------------------------------------------


async def test_expired_runs(store: Store, clock: FakeClock) -> None:
    short = await running_run(store, "short", "t1")  # 30 s lease
    await add_run(store, "long", "t2")
    long = await claim(store, "w2", 60)
    await add_run(store, "pending", "t3")
    assert await store.expired_runs() == []
    clock.advance(30)
    assert await store.expired_runs() == []  # expires strictly after lease_expires_at
    clock.advance(0.000001)
    assert [run.run_id for run in await store.expired_runs()] == ["short"]
    assert (await store.expired_runs())[0] == await store.get_run("short", OWNER)
    clock.advance(30)
    assert sorted(run.run_id for run in await store.expired_runs()) == ["long", "short"]
    assert len(await store.expired_runs(limit=1)) == 1
    # A renewed lease is alive again; a finished run is not running any more.
    await store.renew_lease("long", long.attempt, "w2", 60)
    await store.finish_run("short", short.attempt, outcome())
    assert await store.expired_runs() == []


async def test_recover_requeues_an_expired_run(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(31)
    recovered = await store.recover_run("r1", running.attempt, max_attempts=3)
    assert recovered.status == "pending"
    assert (recovered.lease_owner, recovered.lease_expires_at) == (None, None)
    assert recovered.attempt == 1
    assert recovered.updated_at == clock.now()
    assert recovered.ended_at is None
    assert await store.get_run("r1", OWNER) == recovered
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    assert await store.expired_runs() == []
    again = await claim(store)
    assert (again.run_id, again.attempt) == ("r1", 2)
    with pytest.raises(LeaseLost):
        await store.finish_run("r1", running.attempt, outcome())


async def test_recover_fails_the_run_after_max_attempts(store: Store, clock: FakeClock) -> None:
    await add_run(store, "r1", "t1")
    for attempt in (1, 2):
        run = await claim(store)
        assert run.attempt == attempt
        clock.advance(31)
        recovered = await store.recover_run("r1", attempt, max_attempts=2)
        if attempt == 1:
            assert recovered.status == "pending"
    assert recovered.status == "error"
    assert recovered.error == "WorkerLost: lease expired on attempt 2 of 2"
    assert recovered.ended_at == recovered.updated_at == clock.now()
    assert (recovered.lease_owner, recovered.lease_expires_at) == (None, None)
    assert await store.get_run("r1", OWNER) == recovered
    thread = await store.get_thread("t1", OWNER)
    assert (thread.status, thread.updated_at) == ("error", clock.now())


async def test_recover_settles_an_interrupt_request(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    await store.request_cancel("r1", OWNER, "interrupt")
    clock.advance(31)
    recovered = await store.recover_run("r1", running.attempt, max_attempts=1)
    assert recovered.status == "interrupted"
    assert recovered.cancel_action == "interrupt"
    assert recovered.error is None
    assert recovered.ended_at == clock.now()
    assert (await store.get_thread("t1", OWNER)).status == "idle"


async def test_recover_keeps_a_rollback_request_for_the_next_claimer(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    await store.request_cancel("r1", OWNER, "rollback")
    clock.advance(31)
    recovered = await store.recover_run("r1", running.attempt, max_attempts=3)
    assert (recovered.status, recovered.cancel_action) == ("pending", "rollback")


async def test_recover_with_another_run_queued_keeps_the_thread_busy(store: Store, clock: FakeClock) -> None:
    running = await running_run(store, "r1", "t1")
    await add_run(store, "r2", "t1")
    clock.advance(31)
    await store.recover_run("r1", running.attempt, max_attempts=1)
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    assert (await claim(store)).run_id == "r2"


async def test_recover_is_fenced(store: Store, clock: FakeClock) -> None:
    running = await running_run(store)
    clock.advance(30)
    with pytest.raises(LeaseLost):  # not expired yet
        await store.recover_run("r1", running.attempt, max_attempts=3)
    clock.advance(1)
    with pytest.raises(LeaseLost):
        await store.recover_run("r1", running.attempt + 1, max_attempts=3)
    with pytest.raises(LeaseLost):
        await store.recover_run("nope", 1, max_attempts=3)
    await store.recover_run("r1", running.attempt, max_attempts=3)
    with pytest.raises(LeaseLost):  # someone already moved it on
        await store.recover_run("r1", running.attempt, max_attempts=3)
    assert (await store.get_run("r1", OWNER)).status == "pending"


async def test_usage_type_defaults(store: Store) -> None:
    await add_run(store, "r1", "t1")
    assert (await store.get_run("r1", OWNER)).usage == TokenUsage(0, 0, 0)
