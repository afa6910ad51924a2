"""`RunManager` use-cases over the in-memory store and bus: hints, waits, cancels, validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runplane.core.errors import Conflict, InvalidInput, NotFound, ThreadBusy
from runplane.core.events import WAKEUP_CHANNEL, StreamEvent, cancel_channel, done_channel
from runplane.core.manager import MAX_LIMIT, ManagerSettings, RunManager, fingerprint
from runplane.core.models import Outcome, Run, RunFilter, ThreadFilter, ThreadOutput, TokenUsage
from runplane.core.run_kwargs import RunKwargs
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock, memory_manager

#: Long enough that a test passing within a second cannot have relied on the polling fallback.
NO_POLLING = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> RunManager:
    return memory_manager(clock=clock, settings=NO_POLLING)


async def _running(manager: RunManager, thread_id: str = "t1", owner: str = "") -> Run:
    created = await manager.create_run(thread_id, "agent", owner, if_not_exists="create")
    run = await manager.claim("w1")
    assert run is not None and run.run_id == created.run_id
    return run


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    async with asyncio.timeout(2):
        return [event async for event in events]


async def _next(messages: AsyncIterator[str]) -> str:
    async with asyncio.timeout(1):
        return await anext(messages)


# -- waiting ----------------------------------------------------------------------------------------


async def test_wait_for_run_wakes_on_finish_without_polling(manager: RunManager) -> None:
    run = await _running(manager)
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    assert not waiter.done()
    await manager.finish(run, Outcome("success", "idle", thread_values={"ok": True}))
    async with asyncio.timeout(1):
        joined = await waiter
    assert joined is not None and joined.status == "success"


async def test_wait_for_outcome_reads_the_ended_run_and_its_thread_together(manager: RunManager) -> None:
    """Once the "done" hint of a run another process ended comes, the run and its thread are read
    at once, not one after the other: here the run's read cannot complete before the thread's has
    begun."""
    run = await _running(manager)
    elsewhere = RunManager(manager.store, manager.bus, settings=NO_POLLING)
    thread_read = asyncio.Event()
    get_run, get_thread = manager.store.get_run, manager.store.get_thread
    waiting = False

    async def run_after_thread(*args: object) -> Run:
        if waiting:
            await thread_read.wait()
        return await get_run(*args)  # type: ignore[arg-type]

    async def thread_read_too(*args: object) -> object:
        thread_read.set()
        return await get_thread(*args)  # type: ignore[arg-type]

    manager.store.get_run = run_after_thread  # type: ignore[method-assign,assignment]
    manager.store.get_thread = thread_read_too  # type: ignore[method-assign,assignment]
    waiter = asyncio.create_task(manager.wait_for_outcome(run.run_id, "t1"))
    await asyncio.sleep(0)
    waiting = True
    await elsewhere.finish(run, Outcome("success", "idle", thread_values={"ok": True}))
    async with asyncio.timeout(1):
        ended, thread = await waiter
    assert ended is not None and ended.status == "success"
    assert thread is not None and thread.values == {"ok": True}
    assert thread_read.is_set()


@pytest.mark.parametrize("reader", ["wait_for_outcome", "wait_for_run"])
async def test_a_run_ended_by_a_worker_here_is_handed_to_its_waiter_without_reads(
    manager: RunManager, reader: str
) -> None:
    """The worker ended the run in this process: its waiter takes the ended run and the values
    the worker wrote onto the thread, and reads neither back."""
    run = await _running(manager)
    reads: list[str] = []
    get_run, get_thread = manager.store.get_run, manager.store.get_thread

    async def counted_run(*args: object) -> Run:
        reads.append("run")
        return await get_run(*args)  # type: ignore[arg-type]

    async def counted_thread(*args: object) -> object:
        reads.append("thread")
        return await get_thread(*args)  # type: ignore[arg-type]

    manager.store.get_run = counted_run  # type: ignore[method-assign,assignment]
    manager.store.get_thread = counted_thread  # type: ignore[method-assign,assignment]
    if reader == "wait_for_outcome":
        waiter: asyncio.Task[object] = asyncio.create_task(manager.wait_for_outcome(run.run_id, "t1"))
    else:
        waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    assert reads == ["run"]  # the first read: the run is still running
    finished = await manager.finish(
        run, Outcome("success", "interrupted", thread_values={"ok": 1}, thread_interrupts={"t": [{"v": 1}]})
    )
    async with asyncio.timeout(1):
        result = await waiter
    assert reads == ["run"]
    if reader == "wait_for_outcome":
        assert isinstance(result, tuple)
        ended, thread = result
        assert ended == finished
        assert thread == ThreadOutput({"ok": 1}, {"t": [{"v": 1}]})
        stored = await get_thread("t1", "")
        assert (stored.values, stored.interrupts) == (thread.values, thread.interrupts)
    else:
        assert result == finished
    assert manager.ended_here.get(run.run_id) is None  # nothing kept once nobody waits


async def test_a_waiter_reads_the_thread_when_the_worker_could_not_read_its_final_state(
    manager: RunManager,
) -> None:
    await manager.finish(await _running(manager), Outcome("success", "idle", thread_values={"kept": 1}))
    run = await _running(manager)
    waiter = asyncio.create_task(manager.wait_for_outcome(run.run_id, "t1"))
    await asyncio.sleep(0)
    await manager.finish(run, Outcome("success", "idle", thread_values=None))
    async with asyncio.timeout(1):
        ended, thread = await waiter
    assert ended is not None and ended.status == "success"
    assert thread == ThreadOutput({"kept": 1}, {})


async def test_wait_for_outcome_of_a_rolled_back_run_gives_the_restored_thread(manager: RunManager) -> None:
    run = await _running(manager)
    waiter = asyncio.create_task(manager.wait_for_outcome(run.run_id, "t1"))
    await asyncio.sleep(0)
    await manager.cancel_run(run.run_id, action="rollback")
    await manager.discard(run)  # as the worker ends a rollback
    async with asyncio.timeout(1):
        ended, thread = await waiter
    assert ended is None and thread is not None


async def test_wait_for_a_finished_run_returns_at_once(manager: RunManager) -> None:
    run = await _running(manager)
    finished = await manager.finish(run, Outcome("error", "error", error="boom"))
    async with asyncio.timeout(1):
        assert await manager.wait_for_run(run.run_id) == finished


async def test_wait_for_a_run_deleted_meanwhile_returns_none(manager: RunManager) -> None:
    await _running(manager)
    queued = await manager.create_run("t1", "agent")
    waiter = asyncio.create_task(manager.wait_for_run(queued.run_id))
    await asyncio.sleep(0)
    assert await manager.cancel_run(queued.run_id, action="rollback") is None
    async with asyncio.timeout(1):
        assert await waiter is None


async def test_wait_for_run_times_out(manager: RunManager) -> None:
    run = await _running(manager)
    with pytest.raises(TimeoutError):
        await manager.wait_for_run(run.run_id, timeout=0.01)


async def test_wait_for_a_foreign_or_unknown_run_is_not_found(manager: RunManager) -> None:
    run = await _running(manager, owner="alice")
    with pytest.raises(NotFound):
        await manager.wait_for_run(run.run_id, "bob")
    with pytest.raises(NotFound):
        await manager.wait_for_run(run.run_id, "alice", thread_id="other")
    with pytest.raises(NotFound):
        await manager.wait_for_run("nope")


async def test_wait_falls_back_to_polling_when_a_hint_is_lost(clock: FakeClock) -> None:
    manager = memory_manager(clock=clock, settings=ManagerSettings(wait_fallback_seconds=0.01))
    run = await _running(manager)
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    await manager.store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))  # no hint
    async with asyncio.timeout(1):
        joined = await waiter
    assert joined is not None and joined.status == "success"


# -- cancel -----------------------------------------------------------------------------------------


async def test_cancel_a_pending_run(manager: RunManager) -> None:
    created = await manager.create_run("t1", "agent", if_not_exists="create")
    async with manager.bus.listen(done_channel(created.run_id)) as done:
        cancelled = await manager.cancel_run(created.run_id)
        assert await _next(done) == created.run_id
    assert cancelled is not None
    assert (cancelled.status, cancelled.cancel_action) == ("interrupted", "interrupt")
    assert (await manager.get_thread("t1")).status == "idle"
    assert await manager.claim("w1") is None


async def test_rollback_a_pending_run_deletes_it(manager: RunManager) -> None:
    created = await manager.create_run("t1", "agent", if_not_exists="create")
    assert await manager.cancel_run(created.run_id, action="rollback", wait=True) is None
    with pytest.raises(NotFound):
        await manager.get_run(created.run_id)


async def test_cancel_a_running_run_tells_its_worker(manager: RunManager) -> None:
    run = await _running(manager)
    async with manager.bus.listen(cancel_channel("w1")) as hints:  # its worker's channel
        answered = await manager.cancel_run(run.run_id, action="rollback")
        assert await _next(hints) == run.run_id
    assert answered is not None
    assert (answered.status, answered.cancel_action) == ("running", "rollback")


async def test_cancel_and_wait_returns_the_final_run(manager: RunManager) -> None:
    run = await _running(manager)

    async def worker() -> None:
        async with manager.bus.listen(cancel_channel("w1")) as hints:
            assert await _next(hints) == run.run_id
            assert await manager.renew(run, "w1") == "interrupt"
            await manager.finish(run, Outcome("interrupted", "idle"))

    working = asyncio.create_task(worker())
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        final = await manager.cancel_run(run.run_id, wait=True)
    await working
    assert final is not None and final.status == "interrupted"


async def test_cancel_rejects_an_unknown_action(manager: RunManager) -> None:
    run = await _running(manager)
    with pytest.raises(InvalidInput):
        await manager.cancel_run(run.run_id, action="stop")  # type: ignore[arg-type]


async def test_cancel_of_a_foreign_run_is_not_found(manager: RunManager) -> None:
    run = await _running(manager, owner="alice")
    with pytest.raises(NotFound):
        await manager.cancel_run(run.run_id, "bob")
    with pytest.raises(NotFound):
        await manager.cancel_run(run.run_id, "alice", thread_id="t2")


# -- stream -----------------------------------------------------------------------------------------


async def test_stream_run_checks_ownership_before_any_event(manager: RunManager) -> None:
    run = await _running(manager, owner="alice")
    await manager.publish(run, "values", b"{}")
    with pytest.raises(NotFound):
        await manager.stream_run(run.run_id, "bob")
    with pytest.raises(NotFound):
        await manager.stream_run(run.run_id, "alice", thread_id="other")
    with pytest.raises(NotFound):
        await manager.stream_run("nope", "alice")


async def test_stream_run_replays_then_follows_until_the_end(manager: RunManager) -> None:
    run = await _running(manager)
    first = await manager.publish(run, "values", b"1")
    reader = asyncio.create_task(_collect(await manager.stream_run(run.run_id)))
    resumed = asyncio.create_task(_collect(await manager.stream_run(run.run_id, last_event_id=first)))
    await manager.publish(run, "updates", b"2")
    await manager.finish(run, Outcome("success", "idle"))
    assert [(e.event, e.data) for e in await reader] == [("values", b"1"), ("updates", b"2")]
    assert [e.data for e in await resumed] == [b"2"]
    # After the end, a late client replays what the bus retained and stops.
    assert [e.data for e in await _collect(await manager.stream_run(run.run_id))] == [b"1", b"2"]


async def test_stream_run_rejects_a_bad_last_event_id(manager: RunManager) -> None:
    run = await _running(manager)
    events = await manager.stream_run(run.run_id, last_event_id="not-a-number")
    with pytest.raises(InvalidInput):
        await anext(events)


# -- create -----------------------------------------------------------------------------------------


async def test_create_run_wakes_workers(manager: RunManager) -> None:
    async with manager.bus.listen(WAKEUP_CHANNEL) as wakeups:
        run = await manager.create_run("t1", "agent", if_not_exists="create", kwargs={"input": {}})
        assert await _next(wakeups) == run.run_id
    assert run.kwargs == RunKwargs(input={})


@pytest.mark.parametrize(
    "bad",
    [
        {"multitask_strategy": "replace"},
        {"if_not_exists": "maybe"},
        {"after_seconds": -1},
    ],
)
async def test_create_run_validates(manager: RunManager, bad: dict[str, object]) -> None:
    options: dict[str, object] = {"if_not_exists": "create", **bad}
    with pytest.raises(InvalidInput):
        await manager.create_run("t1", "agent", **options)  # type: ignore[arg-type]
    assert await manager.count_threads() == 0


async def test_create_run_after_seconds_delays_it(manager: RunManager, clock: FakeClock) -> None:
    run = await manager.create_run("t1", "agent", if_not_exists="create", after_seconds=10)
    assert run.not_before is not None
    assert (run.not_before - clock.now()).total_seconds() == 10
    assert await manager.claim("w1") is None
    clock.advance(10)
    assert (await manager.claim("w1")) is not None
    no_delay = await manager.create_run("t2", "agent", if_not_exists="create", after_seconds=0)
    assert no_delay.not_before is None


async def test_create_run_with_interrupt_tells_the_running_worker(manager: RunManager) -> None:
    running = await _running(manager)
    queued = await manager.create_run("t1", "agent")
    async with (
        manager.bus.listen(cancel_channel("w1")) as cancels,
        manager.bus.listen(done_channel(queued.run_id)) as queued_done,
    ):
        await manager.create_run("t1", "agent", multitask_strategy="interrupt")
        assert await _next(cancels) == running.run_id
        assert await _next(queued_done) == queued.run_id
    assert (await manager.get_run(queued.run_id)).status == "interrupted"


async def test_create_run_with_reject_on_a_busy_thread(manager: RunManager) -> None:
    await _running(manager)
    with pytest.raises(ThreadBusy):
        await manager.create_run("t1", "agent", multitask_strategy="reject")


async def test_idempotent_create_replays_only_the_same_payload(manager: RunManager) -> None:
    first = await manager.create_run(
        "t1",
        "agent",
        if_not_exists="create",
        kwargs={"graph_id": "g", "input": {"a": 1, "b": 2}},
        idempotency_key="k",
    )
    again = await manager.create_run(
        "t1",
        "agent",
        if_not_exists="create",
        kwargs={"input": {"b": 2, "a": 1}, "graph_id": "g"},
        idempotency_key="k",
    )
    assert again == first
    with pytest.raises(Conflict):
        await manager.create_run("t1", "agent", kwargs={"input": {"a": 2}}, idempotency_key="k")
    assert len(await manager.list_runs("t1")) == 1


def test_fingerprint_ignores_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, {"c": 2, "d": 3}]}) == fingerprint(
        {"b": [1, {"d": 3, "c": 2}], "a": 1}
    )
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


# -- pages ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "offset"), [(-1, 0), (MAX_LIMIT + 1, 0), (10, -1)])
async def test_pages_are_checked(manager: RunManager, limit: int, offset: int) -> None:
    await manager.create_thread(thread_id="t1")
    with pytest.raises(InvalidInput):
        await manager.list_runs("t1", filter=RunFilter(limit=limit, offset=offset))
    with pytest.raises(InvalidInput):
        await manager.search_threads(filter=ThreadFilter(limit=limit, offset=offset))


async def test_thread_passthroughs(manager: RunManager) -> None:
    await manager.create_thread("alice", thread_id="t1", metadata={"a": 1})
    assert (await manager.create_thread("alice", thread_id="t1", if_exists="do_nothing")).metadata == {"a": 1}
    assert (await manager.update_thread("t1", {"b": 2}, "alice")).metadata == {"a": 1, "b": 2}
    thread = await manager.set_thread_state("t1", {"v": 1}, {}, "alice", status="error")
    assert (thread.values, thread.status) == ({"v": 1}, "error")
    assert await manager.get_thread("t1", "alice") == thread
    assert [t.thread_id for t in await manager.search_threads("alice")] == ["t1"]
    assert await manager.count_threads("alice", ThreadFilter(status="error")) == 1
    assert await manager.thread_usage("t1", "alice") == TokenUsage()
    await manager.delete_thread("t1", "alice")
    assert await manager.count_threads("alice") == 0


# -- workers ----------------------------------------------------------------------------------------


async def test_delete_thread_stops_its_running_run(manager: RunManager) -> None:
    run = await _running(manager)
    reader = asyncio.create_task(_collect(await manager.stream_run(run.run_id)))
    async with manager.bus.listen(cancel_channel("w1")) as cancels:
        await manager.delete_thread("t1")
        assert await _next(cancels) == run.run_id
    assert await reader == []


async def test_delete_run_ends_its_stream_and_joiners(manager: RunManager) -> None:
    created = await manager.create_run("t1", "agent", if_not_exists="create")
    waiter = asyncio.create_task(manager.wait_for_run(created.run_id))
    await asyncio.sleep(0)
    await manager.delete_run(created.run_id)
    async with asyncio.timeout(1):
        assert await waiter is None


async def test_release_requeues_and_wakes_workers(manager: RunManager) -> None:
    run = await _running(manager)
    async with manager.bus.listen(WAKEUP_CHANNEL) as wakeups:
        released = await manager.release(run)
        assert await _next(wakeups) == run.run_id
    assert released.status == "pending"


async def test_discard_deletes_and_ends(manager: RunManager) -> None:
    run = await _running(manager)
    await manager.cancel_run(run.run_id, action="rollback")
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    await manager.discard(run)
    async with asyncio.timeout(1):
        assert await waiter is None


async def test_recover_expired_requeues_then_fails_at_max_attempts(
    manager: RunManager, clock: FakeClock
) -> None:
    run = await _running(manager)
    assert await manager.recover_expired() == []
    clock.advance(31)
    async with manager.bus.listen(WAKEUP_CHANNEL) as wakeups:
        [requeued] = await manager.recover_expired()
        assert await _next(wakeups) == run.run_id
    assert requeued.status == "pending"
    again = await manager.claim("w2")
    assert again is not None and again.attempt == 2
    waiter = asyncio.create_task(manager.wait_for_run(run.run_id))
    await asyncio.sleep(0)
    clock.advance(31)
    [failed] = await manager.recover_expired()
    assert failed.status == "error"
    async with asyncio.timeout(1):
        joined = await waiter
    assert joined is not None and joined.error == "WorkerLost: lease expired on attempt 2 of 2"


class _SlowExpiryStore(InMemoryStore):
    """Yields after listing expired runs, so concurrent recoverers all see the same list."""

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        expired = await super().expired_runs(limit)
        await asyncio.sleep(0)
        return expired


async def test_concurrent_recovery_settles_each_run_once(clock: FakeClock) -> None:
    manager = RunManager(_SlowExpiryStore(clock=clock), InMemoryBus(), clock=clock, settings=NO_POLLING)
    runs = [await _running(manager, thread_id=f"t{n}") for n in range(5)]
    clock.advance(31)
    results = await asyncio.gather(*(manager.recover_expired() for _ in range(3)))
    recovered = [run.run_id for batch in results for run in batch]
    assert sorted(recovered) == sorted(run.run_id for run in runs)  # each settled exactly once


async def test_delete_thread_ends_pending_runs_without_a_cancel_hint(manager: RunManager) -> None:
    created = await manager.create_run("t1", "agent", if_not_exists="create")
    waiter = asyncio.create_task(manager.wait_for_run(created.run_id))
    await asyncio.sleep(0)
    async with manager.bus.listen(cancel_channel("w1")) as cancels:
        await manager.delete_thread("t1")
        async with asyncio.timeout(1):
            assert await waiter is None
        await asyncio.sleep(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await anext(cancels)
