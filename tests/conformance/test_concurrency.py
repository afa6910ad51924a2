"""Races between callers and workers, on two store instances where the backend allows it.

Each test starts its competitors together with `asyncio.gather`; on multi-instance backends (a SQLite
file, PostgreSQL) the two instances are separate connections, as two processes would be.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from typing import Any

from runplane.core.errors import CancelRequested, LeaseLost, ThreadBusy
from runplane.core.models import CancelResult, Run, RunFilter
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, OpenAnother, add_run, make_thread, new_run, outcome


def _kind(result: object) -> str:
    if isinstance(result, BaseException):
        return type(result).__name__
    return "ok"


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    return await asyncio.gather(*aws, return_exceptions=True)


async def test_concurrent_reject_creates_admit_exactly_one(store: Store, open_another: OpenAnother) -> None:
    other = await open_another()
    await make_thread(store, "t1")
    results = await _gather(
        *(
            (store if i % 2 else other).create_run(
                new_run(f"r{i}", "t1", strategy="reject", if_not_exists="reject")
            )
            for i in range(50)
        )
    )
    kinds = Counter(_kind(result) for result in results)
    assert kinds == {"ok": 1, "ThreadBusy": 49}, kinds
    [admitted] = [result.run for result in results if not isinstance(result, BaseException)]
    assert [run.run_id for run in await store.list_runs("t1", OWNER, RunFilter(limit=100))] == [
        admitted.run_id
    ]
    assert (await other.get_thread("t1", OWNER)).status == "busy"


async def test_concurrent_reject_creates_on_a_missing_thread_admit_exactly_one(
    store: Store, open_another: OpenAnother
) -> None:
    """The thread is created by the first admission; the others see it busy (never a Conflict)."""
    other = await open_another()
    results = await _gather(
        *(
            (store if i % 2 else other).create_run(
                new_run(f"r{i}", "fresh", strategy="reject", if_not_exists="create")
            )
            for i in range(20)
        )
    )
    kinds = Counter(_kind(result) for result in results)
    assert kinds == {"ok": 1, "ThreadBusy": 19}, kinds
    assert len(await store.list_runs("fresh", OWNER, RunFilter(limit=100))) == 1


async def test_concurrent_enqueues_are_all_admitted_in_one_queue(
    store: Store, open_another: OpenAnother
) -> None:
    other = await open_another()
    await make_thread(store, "t1")
    results = await _gather(
        *((store if i % 2 else other).create_run(new_run(f"r{i}", "t1")) for i in range(20))
    )
    assert Counter(_kind(result) for result in results) == {"ok": 20}
    claimed = []
    while (run := await store.claim_run("w1", 30)) is not None:
        claimed.append(run.run_id)
        await other.finish_run(run.run_id, run.attempt, outcome())
    assert sorted(claimed) == sorted(f"r{i}" for i in range(20))
    assert (await store.get_thread("t1", OWNER)).status == "idle"


async def test_interrupt_racing_completion_leaves_one_outcome(
    store: Store, open_another: OpenAnother
) -> None:
    caller = await open_another()
    for i in range(20):
        await add_run(store, f"r{i}", f"t{i}")
    for i in range(20):
        run = await store.claim_run("w1", 30)
        assert run is not None
        finish = store.finish_run(run.run_id, run.attempt, outcome(thread_values={"done": True}))
        cancel = caller.request_cancel(run.run_id, OWNER, "interrupt")
        # Alternate who is scheduled first, so both orders are exercised.
        if i % 2:
            finished, cancelled = await _gather(finish, cancel)
        else:
            cancelled, finished = await _gather(cancel, finish)
        assert isinstance(cancelled, CancelResult), f"cancel raised {cancelled!r}"
        if isinstance(finished, Run):
            # Completion won: the cancel saw a terminal run and changed nothing.
            assert finished.status == "success"
            assert cancelled.settled is True
            assert cancelled.run == finished
            assert cancelled.run.cancel_action is None
            assert await caller.get_run(run.run_id, OWNER) == finished
        else:
            # The cancel won: completion is refused, and the worker takes the cancel path.
            assert isinstance(finished, CancelRequested), f"finish raised {finished!r}"
            assert finished.action == "interrupt"
            assert cancelled.settled is False
            assert cancelled.run.cancel_action == "interrupt"
            interrupted = await store.finish_run(run.run_id, run.attempt, outcome("interrupted"))
            assert interrupted.status == "interrupted"
            assert await caller.get_run(run.run_id, OWNER) == interrupted
        # Whatever won, nothing moves the run afterwards.
        final = await caller.get_run(run.run_id, OWNER)
        again = await caller.request_cancel(run.run_id, OWNER, "rollback")
        assert again.run == final
        assert await store.get_run(run.run_id, OWNER) == final


async def test_cancel_racing_claim_leaves_one_outcome(store: Store, open_another: OpenAnother) -> None:
    caller = await open_another()
    for i in range(20):
        await add_run(store, f"r{i}", f"t{i}")
        claim = store.claim_run("w1", 30)
        cancel = caller.request_cancel(f"r{i}", OWNER, "interrupt")
        if i % 2:
            claimed, cancelled = await _gather(claim, cancel)
        else:
            cancelled, claimed = await _gather(cancel, claim)
        assert isinstance(cancelled, CancelResult), f"cancel raised {cancelled!r}"
        assert not isinstance(claimed, BaseException), f"claim raised {claimed!r}"
        final = await caller.get_run(f"r{i}", OWNER)
        if claimed is None:
            assert cancelled.settled is True
            assert final.status == "interrupted"
        else:
            # Claimed first: the run is running and carries the request for its worker.
            assert cancelled.settled is False
            assert (final.status, final.cancel_action) == ("running", "interrupt")
            assert await store.renew_lease(claimed.run_id, claimed.attempt, "w1", 30) == "interrupt"
            await store.finish_run(claimed.run_id, claimed.attempt, outcome("interrupted"))


async def test_two_claimers_never_claim_the_same_run(store: Store, open_another: OpenAnother) -> None:
    other = await open_another()
    threads = 40
    for i in range(threads):
        await add_run(store, f"a{i}", f"t{i}")
    for i in range(threads):
        await add_run(store, f"b{i}", f"t{i}")

    async def claim_loop(instance: Store, worker_id: str) -> list[Run]:
        claimed = []
        while (run := await instance.claim_run(worker_id, 30)) is not None:
            claimed.append(run)
        return claimed

    async def claim_all() -> list[Run]:
        loops = [
            claim_loop(instance, f"w{n}-{j}") for n, instance in enumerate((store, other)) for j in range(3)
        ]
        return [run for batch in await asyncio.gather(*loops) for run in batch]

    first = await claim_all()
    run_ids = [run.run_id for run in first]
    assert len(run_ids) == len(set(run_ids)), Counter(run_ids).most_common(3)
    # Only the oldest run of each thread may run, and only once.
    assert sorted(run_ids) == sorted(f"a{i}" for i in range(threads))
    assert all(run.attempt == 1 for run in first)

    await asyncio.gather(
        *(
            (other if n % 2 else store).finish_run(run.run_id, run.attempt, outcome())
            for n, run in enumerate(first)
        )
    )
    second = await claim_all()
    assert sorted(run.run_id for run in second) == sorted(f"b{i}" for i in range(threads))
    assert await store.claim_run("w9", 30) is None


async def test_concurrent_recovery_moves_a_run_once(
    store: Store, open_another: OpenAnother, clock: FakeClock
) -> None:
    other = await open_another()
    for i in range(10):
        await add_run(store, f"r{i}", f"t{i}")
    held = [run for _ in range(10) if (run := await store.claim_run("dead", 30)) is not None]
    clock.advance(31)
    results = await _gather(
        *(instance.recover_run(run.run_id, run.attempt, 3) for run in held for instance in (store, other))
    )
    kinds = Counter(_kind(result) for result in results)
    assert kinds == {"ok": 10, "LeaseLost": 10}, kinds
    assert all(isinstance(r, Run | LeaseLost) for r in results)
    for run in held:
        assert (await store.get_run(run.run_id, OWNER)).status == "pending"


async def test_concurrent_finish_and_discard_of_one_claim(store: Store, open_another: OpenAnother) -> None:
    other = await open_another()
    for i in range(10):
        await add_run(store, f"r{i}", f"t{i}")
        run = await store.claim_run("w1", 30)
        assert run is not None
        results = await _gather(
            store.finish_run(run.run_id, run.attempt, outcome()), other.discard_run(run.run_id, run.attempt)
        )
        kinds = sorted(_kind(result) for result in results)
        assert kinds == ["LeaseLost", "ok"], results
        assert not any(
            isinstance(r, BaseException) and not isinstance(r, LeaseLost | ThreadBusy) for r in results
        )
