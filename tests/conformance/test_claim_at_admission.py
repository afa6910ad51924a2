"""A run admitted already claimed (`NewRun.claim_for`), on every store.

The admission takes the lease a worker's claim would take, in the same transaction, exactly when
`lifecycle.starts_at_admission` says the run can start at once: its thread keeps no active run and
it is due. Otherwise it is admitted pending and nothing of the claim is written. A run claimed this
way is indistinguishable from one `claim_and_look` took: fenced by attempt 1, renewable, finished
by its holder, and its thread busy with nothing left to claim.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from runplane.core.errors import LeaseLost
from runplane.core.models import Claimant, Claimed, RunFilter
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, OpenAnother, add_run, claim, new_run, outcome

LEASE = 30.0


def _for(worker_id: str = "w1") -> Claimant:
    return Claimant(worker_id, LEASE)


async def test_a_run_on_a_new_thread_is_admitted_claimed(store: Store, clock: FakeClock) -> None:
    admission = await store.create_run(new_run("r1", "t1", claim_for=_for()))
    run = admission.run
    assert admission.claimed
    assert (run.status, run.attempt, run.lease_owner) == ("running", 1, "w1")
    assert run.lease_expires_at == clock.now() + timedelta(seconds=LEASE)
    assert run.started_at == clock.now()
    assert await store.get_run("r1", OWNER) == run  # what `claim_and_look` would have returned
    assert (await store.get_thread("t1", OWNER)).status == "busy"
    # Nothing is left to claim, and the claim said so in the admission.
    assert await store.claim_and_look("w2", LEASE) == Claimed(None)
    # Its creator is answered the run as created, before the claim.
    created = admission.as_created
    assert (created.status, created.attempt, created.lease_owner, created.started_at) == (
        "pending",
        0,
        None,
        None,
    )


async def test_the_claimed_attempt_holds_the_run_like_any_claim(store: Store) -> None:
    run = (await store.create_run(new_run("r1", "t1", claim_for=_for()))).run
    assert await store.renew_lease("r1", 1, "w1", LEASE) is None
    async with store.hold_attempt("r1", 1, LEASE):
        pass
    with pytest.raises(LeaseLost):
        await store.renew_lease("r1", 0, "w1", LEASE)  # no attempt before the admission's
    finished = await store.finish_and_look("r1", run.attempt, outcome())
    assert finished.run.status == "success"
    assert (await store.get_thread("t1", OWNER)).status == "idle"


async def test_a_run_behind_an_active_one_is_admitted_pending(store: Store) -> None:
    first = (await store.create_run(new_run("first", "t1", claim_for=_for()))).run
    queued = await store.create_run(new_run("second", "t1", claim_for=_for()))
    assert not queued.claimed
    assert (queued.run.status, queued.run.attempt, queued.run.lease_owner) == ("pending", 0, None)
    assert await store.claim_and_look("w1", LEASE) == Claimed(None)  # FIFO per thread
    finished = await store.finish_and_look("first", first.attempt, outcome())
    assert finished.next_claimable
    assert (await claim(store)).run_id == "second"


async def test_a_run_behind_a_pending_one_is_admitted_pending(store: Store, clock: FakeClock) -> None:
    await add_run(store, "later", "t1", not_before=clock.now() + timedelta(seconds=5))
    queued = await store.create_run(new_run("second", "t1", claim_for=_for()))
    assert not queued.claimed and queued.run.status == "pending"


async def test_a_run_not_yet_due_is_admitted_pending(store: Store, clock: FakeClock) -> None:
    admission = await store.create_run(
        new_run("r1", "t1", claim_for=_for(), not_before=clock.now() + timedelta(seconds=5))
    )
    assert not admission.claimed and admission.run.status == "pending"
    assert await store.claim_and_look("w1", LEASE) == Claimed(None)
    clock.advance(5)
    assert (await claim(store)).run_id == "r1"


async def test_a_run_that_cancels_the_pending_ones_starts_at_once(store: Store, clock: FakeClock) -> None:
    # `interrupt` cancels the thread's pending run outright: the new run is its only active one.
    await add_run(store, "old", "t1", not_before=clock.now() + timedelta(seconds=5))
    admission = await store.create_run(new_run("new", "t1", strategy="interrupt", claim_for=_for()))
    assert admission.claimed and [run.run_id for run in admission.cancelled_pending] == ["old"]
    assert (await store.get_run("old", OWNER)).status == "interrupted"


async def test_a_run_that_asks_a_running_one_to_stop_waits_for_it(store: Store) -> None:
    running = (await store.create_run(new_run("old", "t1", claim_for=_for()))).run
    admission = await store.create_run(new_run("new", "t1", strategy="interrupt", claim_for=_for()))
    assert not admission.claimed and admission.run.status == "pending"
    assert [run.run_id for run in admission.cancel_requested] == ["old"]
    assert (await store.get_run("old", OWNER)).attempt == running.attempt


async def test_a_replay_claims_nothing(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    replay = await store.create_run(
        new_run("r2", "t1", idempotency_key="k", fingerprint="f", claim_for=_for())
    )
    assert replay.replayed and not replay.claimed
    assert replay.run.status == "pending"
    assert (await claim(store)).run_id == "r1"


async def test_another_instance_sees_the_claim(store: Store, open_another: OpenAnother) -> None:
    other = await open_another()
    await store.create_run(new_run("r1", "t1", claim_for=_for()))
    assert await other.claim_and_look("w2", LEASE) == Claimed(None)
    seen = await other.get_run("r1", OWNER)
    assert (seen.status, seen.attempt, seen.lease_owner) == ("running", 1, "w1")


async def test_concurrent_admissions_on_one_new_thread_claim_exactly_one(
    store: Store, open_another: OpenAnother
) -> None:
    """Two processes admit runs on one new thread at once, each for its own worker: one run is
    claimed, every other one is queued behind it, pending."""
    other = await open_another()
    admissions = await asyncio.gather(
        *(
            (store if i % 2 else other).create_run(new_run(f"r{i:02d}", "fresh", claim_for=_for(f"w{i % 2}")))
            for i in range(20)
        )
    )
    claimed = [admission.run for admission in admissions if admission.claimed]
    assert len(claimed) == 1
    runs = await store.list_runs("fresh", OWNER, RunFilter(limit=100))
    assert sorted(run.status for run in runs) == ["pending"] * 19 + ["running"]
    # Its end makes the next one claimable: the queue goes on from it.
    finished = await store.finish_and_look(claimed[0].run_id, 1, outcome())
    assert finished.next_claimable
    assert await store.claim_and_look("w0", LEASE) != Claimed(None)
