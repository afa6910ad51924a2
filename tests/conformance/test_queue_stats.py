"""The queue at a glance (`Store.queue_stats`): what `/metrics` and the dashboard read, over every
owner, so every process sharing a database reports the same numbers."""

from __future__ import annotations

from runplane.core.models import QueueStats
from runplane.core.store import Store
from tests.conformance._support import OWNER, OpenAnother, add_run, claim, outcome


async def test_an_empty_queue(store: Store) -> None:
    assert await store.queue_stats() == QueueStats(pending=0, running=0, busy_workers=0)


async def test_counts_pending_running_and_busy_workers_of_every_owner(store: Store) -> None:
    await add_run(store, "a1", "ta1", owner="alice")
    await add_run(store, "a2", "ta1", owner="alice")  # queued behind a1 on its thread
    await add_run(store, "b1", "tb1", owner="bob")
    await add_run(store, "b2", "tb2", owner="bob")
    await add_run(store, "c1", "tc1", owner="carol")
    assert await store.queue_stats() == QueueStats(pending=5, running=0, busy_workers=0)

    first = await claim(store, "w1")
    await claim(store, "w1")
    await claim(store, "w2")
    assert await store.queue_stats() == QueueStats(pending=2, running=3, busy_workers=2)

    await store.finish_run(first.run_id, first.attempt, outcome())
    stats = await store.queue_stats()
    assert (stats.running, stats.busy_workers) == (2, 2)
    # Finishing a1 made a2 claimable; the finished run counts nowhere.
    assert stats.pending == 2


async def test_a_cancelled_pending_run_leaves_the_queue(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await store.request_cancel("r1", OWNER, "interrupt")
    assert await store.queue_stats() == QueueStats()


async def test_two_instances_on_one_database_agree(store: Store, open_another: OpenAnother) -> None:
    other = await open_another()  # the same instance where the database cannot be shared
    await add_run(store, "r1", "t1")
    await add_run(other, "r2", "t2")
    await claim(other, "w9")
    assert await store.queue_stats() == await other.queue_stats() == QueueStats(1, 1, 1)
