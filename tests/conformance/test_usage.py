"""Token usage totals of a thread."""

from __future__ import annotations

import pytest

from runplane.core.errors import NotFound
from runplane.core.models import TokenUsage
from runplane.core.store import Store
from tests.conformance._support import OWNER, add_run, claim, make_thread, outcome, usage


async def test_a_thread_without_runs_has_zero_usage(store: Store) -> None:
    await make_thread(store, "t1")
    assert await store.thread_usage("t1", OWNER) == TokenUsage()


async def test_usage_sums_every_run_of_the_thread(store: Store) -> None:
    await add_run(store, "r1", "t1")
    first = await claim(store)
    await store.record_progress("r1", first.attempt, usage=usage(10, 5))
    await store.finish_run("r1", first.attempt, outcome("error", "error"))  # failed runs still count
    await add_run(store, "r2", "t1")
    second = await claim(store)
    await store.finish_run("r2", second.attempt, outcome(usage=TokenUsage(1, 2, 4)))
    await add_run(store, "r3", "t1")
    third = await claim(store)
    await store.record_progress("r3", third.attempt, usage=usage(100, 0))  # still running
    await add_run(store, "r4", "t1")  # pending, no usage
    await add_run(store, "other", "t2")
    other = await claim(store)
    await store.record_progress("other", other.attempt, usage=usage(1000, 1000))

    assert await store.thread_usage("t1", OWNER) == TokenUsage(111, 7, 119)
    assert await store.thread_usage("t2", OWNER) == usage(1000, 1000)


async def test_deleted_runs_leave_the_total(store: Store) -> None:
    await add_run(store, "r1", "t1")
    run = await claim(store)
    await store.finish_run("r1", run.attempt, outcome(usage=usage(3, 3)))
    await add_run(store, "r2", "t1")
    run = await claim(store)
    await store.finish_run("r2", run.attempt, outcome(usage=usage(1, 1)))
    await store.delete_run("r1", OWNER)
    assert await store.thread_usage("t1", OWNER) == usage(1, 1)


async def test_large_counts_survive(store: Store) -> None:
    await add_run(store, "r1", "t1")
    run = await claim(store)
    big = TokenUsage(2**40, 2**40, 2**41)
    await store.finish_run("r1", run.attempt, outcome(usage=big))
    assert await store.thread_usage("t1", OWNER) == big
    assert (await store.get_run("r1", OWNER)).usage == big


async def test_usage_of_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.thread_usage("nope", OWNER)
