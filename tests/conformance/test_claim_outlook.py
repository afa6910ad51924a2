"""What a claim and a finish say about the rest of the queue, in their own transaction.

`claim_and_look` says whether another run is claimable (`Claimed.more`) and `finish_and_look`
whether the thread's next run became claimable (`Finished.next_claimable`), by the one rule
`lifecycle.head_is_claimable`. A worker claims again only when one of them says so (or a hint
comes), so a wrong False would leave a run to the fallback poll and a wrong True costs an empty claim.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from runplane.core.errors import CancelRequested, LeaseLost
from runplane.core.models import Claimed
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, add_run, claim, outcome

# -- claim_and_look -------------------------------------------------------------------------------


async def test_an_empty_queue_claims_nothing_and_has_nothing_more(store: Store) -> None:
    assert await store.claim_and_look("w1", 30) == Claimed(None, more=False)


async def test_the_claim_says_more_while_another_thread_has_a_claimable_run(store: Store) -> None:
    for run_id, thread_id in [("a", "t1"), ("b", "t2"), ("c", "t3")]:
        await add_run(store, run_id, thread_id)
    first = await store.claim_and_look("w1", 30)
    assert first.run is not None and first.run.run_id == "a" and first.more
    assert first.run == await store.get_run("a", OWNER)  # the same record as `claim_run`
    second = await store.claim_and_look("w1", 30)
    assert second.run is not None and second.run.run_id == "b" and second.more
    last = await store.claim_and_look("w1", 30)
    assert last.run is not None and last.run.run_id == "c"
    assert not last.more
    assert await store.claim_and_look("w1", 30) == Claimed(None)


async def test_runs_queued_behind_the_claimed_one_are_not_more(store: Store) -> None:
    # Its thread is busy with the run just claimed: FIFO per thread, nothing else to claim.
    await add_run(store, "first", "t1")
    await add_run(store, "second", "t1")
    claimed = await store.claim_and_look("w1", 30)
    assert claimed.run is not None and claimed.run.run_id == "first"
    assert not claimed.more
    assert await store.claim_run("w1", 30) is None


async def test_a_run_behind_a_busy_thread_is_not_more(store: Store) -> None:
    await add_run(store, "busy", "t1")
    await claim(store)
    await add_run(store, "waiting", "t1")
    await add_run(store, "free", "t2")
    claimed = await store.claim_and_look("w1", 30)
    assert claimed.run is not None and claimed.run.run_id == "free"
    assert not claimed.more


async def test_a_run_not_yet_due_is_not_more_until_it_is(store: Store, clock: FakeClock) -> None:
    await add_run(store, "now", "t1")
    await add_run(store, "later", "t2", not_before=clock.now() + timedelta(seconds=5))
    await add_run(store, "now-too", "t3")
    first = await store.claim_and_look("w1", 30)
    assert first.run is not None and first.run.run_id == "now" and first.more  # now-too
    second = await store.claim_and_look("w1", 30)
    assert second.run is not None and second.run.run_id == "now-too"
    assert not second.more  # `later` is not due
    clock.advance(5)  # due exactly now: not_before is inclusive
    await add_run(store, "then", "t4")
    third = await store.claim_and_look("w1", 30)
    assert third.run is not None and third.run.run_id == "later"
    assert third.more  # then


async def test_a_handed_back_run_is_more(store: Store) -> None:
    await add_run(store, "a", "t1")
    await add_run(store, "b", "t2")
    first = await claim(store)
    await store.release_run(first.run_id, first.attempt)  # back at its old place
    claimed = await store.claim_and_look("w2", 30)
    assert claimed.run is not None and claimed.run.run_id == "a" and claimed.more


# -- finish_and_look ------------------------------------------------------------------------------


async def test_a_finish_with_nothing_queued_behind_has_no_next(store: Store) -> None:
    await add_run(store, "only", "t1")
    await add_run(store, "other", "t2")  # another thread's run is not this finish's business
    run = await claim(store)
    finished = await store.finish_and_look(run.run_id, run.attempt, outcome())
    assert not finished.next_claimable
    assert finished.run == await store.get_run("only", OWNER)
    assert finished.run.status == "success"


async def test_a_finish_unblocks_the_run_queued_behind_it(store: Store) -> None:
    await add_run(store, "first", "t1")
    await add_run(store, "second", "t1")
    await add_run(store, "third", "t1")
    run = await claim(store)
    finished = await store.finish_and_look(run.run_id, run.attempt, outcome("error", "error", error="x"))
    assert finished.next_claimable
    assert finished.run.status == "error"
    second = await store.claim_and_look("w1", 30)
    assert second.run is not None and second.run.run_id == "second"
    assert not second.more  # `third` waits behind `second`
    assert (await store.finish_and_look("second", second.run.attempt, outcome())).next_claimable
    third = await claim(store)
    assert not (await store.finish_and_look(third.run_id, third.attempt, outcome())).next_claimable


async def test_a_finish_before_a_delayed_successor_has_no_next(store: Store, clock: FakeClock) -> None:
    await add_run(store, "first", "t1")
    await add_run(store, "delayed", "t1", not_before=clock.now() + timedelta(seconds=5))
    run = await claim(store)
    assert not (await store.finish_and_look(run.run_id, run.attempt, outcome())).next_claimable
    clock.advance(5)
    assert (await claim(store)).run_id == "delayed"


async def test_an_interrupted_run_unblocks_the_run_that_interrupted_it(store: Store) -> None:
    await add_run(store, "first", "t1")
    run = await claim(store)
    await add_run(store, "second", "t1", strategy="interrupt")
    assert (await store.get_run("first", OWNER)).cancel_action == "interrupt"
    with pytest.raises(CancelRequested):  # the request wins over a success
        await store.finish_and_look(run.run_id, run.attempt, outcome())
    finished = await store.finish_and_look(run.run_id, run.attempt, outcome("interrupted"))
    assert finished.next_claimable and finished.run.status == "interrupted"
    assert (await claim(store)).run_id == "second"


async def test_finish_and_look_is_fenced(store: Store) -> None:
    await add_run(store, "first", "t1")
    await add_run(store, "second", "t1")
    run = await claim(store)
    with pytest.raises(LeaseLost):
        await store.finish_and_look(run.run_id, run.attempt + 1, outcome())
    assert (await store.get_run("first", OWNER)).status == "running"
    assert await store.claim_run("w1", 30) is None  # `second` still waits
