"""`RunManager`'s cron use-cases and the `Scheduler` over the in-memory store: a fire is an ordinary
run, catch-up fires once, refused runs skip their slot, and the scheduler sleeps until the next slot
but wakes when a cron changes."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from runplane.core.errors import InvalidInput
from runplane.core.events import WAKEUP_CHANNEL
from runplane.core.manager import RunManager
from runplane.core.models import CronChanges, NewCron, RunFilter
from runplane.core.observe import NullObserver
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock
from runplane.worker.scheduler import CroniterSchedule, Scheduler


def manager_with(clock: FakeClock | None = None) -> RunManager:
    return RunManager(InMemoryStore(clock=clock), InMemoryBus(), clock=clock, schedule=CroniterSchedule())


def cron(cron_id: str, *, owner: str = "alice", thread_id: str | None = None, **changes: object) -> NewCron:
    fields: dict[str, object] = {
        "cron_id": cron_id,
        "owner": owner,
        "assistant_id": "asst",
        "thread_id": thread_id,
        "schedule": "* * * * *",
        "timezone": None,
        "end_time": None,
        "enabled": True,
        "on_run_completed": None if thread_id else "delete",
        "payload": {},
        "kwargs": {"graph_id": "echo", "webhook": "https://example.com/h", "temporary": thread_id is None},
        "metadata": {"team": "a"},
        "multitask_strategy": "enqueue",
        "next_run_date": None,
    }
    fields.update(changes)
    return NewCron(**fields)  # type: ignore[arg-type]


async def test_a_fire_is_an_ordinary_run_and_catch_up_fires_once() -> None:
    clock = FakeClock()
    manager = manager_with(clock)
    created = await manager.create_cron(cron("c1"))
    assert created.next_run_date == clock.now() + timedelta(minutes=1)
    assert await manager.fire_due_crons() == []
    clock.advance(10 * 60 + 30)  # down for ten slots
    [run] = await manager.fire_due_crons()
    assert await manager.fire_due_crons() == []  # once, not once per missed slot
    assert (await manager.get_cron("c1", "alice")).next_run_date == created.next_run_date + timedelta(
        minutes=10
    )
    assert run.owner == "alice" and run.status == "pending"
    assert run.metadata == {"graph_id": "echo", "assistant_id": "asst", "team": "a", "cron_id": "c1"}
    assert run.kwargs.webhook == "https://example.com/h" and run.kwargs.temporary is True
    thread = await manager.get_thread(run.thread_id, "alice")
    assert thread.metadata == {"graph_id": "echo", "assistant_id": "asst", "team": "a"}


async def test_a_run_that_cannot_be_admitted_skips_its_slot(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    manager = manager_with(clock)
    thread = await manager.create_thread("alice")
    await manager.create_run(thread.thread_id, "asst", "alice", kwargs={"graph_id": "echo"})
    await manager.create_cron(cron("c1", thread_id=thread.thread_id, multitask_strategy="reject"))
    clock.advance(61)
    with caplog.at_level(logging.WARNING):
        assert await manager.fire_due_crons() == []
    assert "skipped" in caplog.text
    assert (await manager.get_cron("c1", "alice")).next_run_date == clock.now() + timedelta(seconds=59)
    assert len(await manager.list_runs(thread.thread_id, "alice", RunFilter())) == 1


async def test_no_slot_fires_after_the_end_time() -> None:
    clock = FakeClock()
    manager = manager_with(clock)
    await manager.create_cron(cron("c1", end_time=clock.now() + timedelta(seconds=90)))
    clock.advance(60)
    assert len(await manager.fire_due_crons()) == 1
    assert (await manager.get_cron("c1", "alice")).next_run_date is None  # 120 s is past the end
    clock.advance(3600)
    assert await manager.fire_due_crons() == []
    assert await manager.next_cron_slot() is None


async def test_re_enabling_starts_from_now() -> None:
    clock = FakeClock()
    manager = manager_with(clock)
    await manager.create_cron(cron("c1"))
    await manager.update_cron("c1", CronChanges(enabled=False), "alice")
    clock.advance(3600)
    assert await manager.fire_due_crons() == []
    enabled = await manager.update_cron("c1", CronChanges(enabled=True), "alice")
    assert enabled.next_run_date == clock.now() + timedelta(minutes=1)
    assert await manager.fire_due_crons() == []  # the missed hour is not fired


async def test_crons_need_a_schedule_and_valid_input() -> None:
    plain = RunManager(InMemoryStore(), InMemoryBus())
    with pytest.raises(InvalidInput, match="no schedule"):
        await plain.create_cron(cron("c1"))
    manager = manager_with()
    with pytest.raises(InvalidInput, match="Invalid cron schedule"):
        await manager.create_cron(cron("c1", schedule="every day"))
    assert await manager.count_crons("alice") == 0


async def test_the_scheduler_sleeps_until_the_next_slot() -> None:
    clock = FakeClock()
    manager = manager_with(clock)
    scheduler = Scheduler(manager, max_sleep=7200)
    assert await scheduler._sleep_seconds() == 7200  # no cron: only the safety net
    await manager.create_cron(cron("c1", schedule="0 * * * *"))  # the top of the next hour
    assert await scheduler._sleep_seconds() == 3600
    clock.advance(3599.5)
    assert await scheduler._sleep_seconds() == 0.5


async def test_a_new_cron_wakes_a_sleeping_scheduler() -> None:
    manager = manager_with()
    scheduler = Scheduler(manager, max_sleep=3600)  # without the hint it would sleep an hour
    await scheduler.start()
    try:
        async with asyncio.timeout(30), manager.listen(WAKEUP_CHANNEL) as runs:
            await manager.create_cron(cron("c1", schedule="* * * * * *"))
            await anext(runs)  # the first fire admitted a run
        assert scheduler.fired >= 1
    finally:
        await scheduler.stop()


class CountingObserver(NullObserver):
    """Counts what the metrics hear of crons and webhooks."""

    def __init__(self) -> None:
        self.fires = 0
        self.deliveries: list[bool] = []

    def cron_fired(self) -> None:
        self.fires += 1

    def webhook_delivered(self, ok: bool) -> None:
        self.deliveries.append(ok)


async def test_fires_and_deliveries_reach_the_observer() -> None:
    clock = FakeClock()
    observer = CountingObserver()
    manager = RunManager(
        InMemoryStore(clock=clock), InMemoryBus(), clock=clock, schedule=CroniterSchedule(), observer=observer
    )
    await manager.create_cron(cron("c1"))
    clock.advance(90)
    [run] = await manager.fire_due_crons()
    assert await manager.fire_due_crons() == [] and observer.fires == 1
    await manager.cancel_run(run.run_id, "alice")  # a settled run writes its webhook to the outbox
    [delivery] = await manager.claim_webhooks()
    await manager.webhook_failed(delivery, "503", clock.now())
    await manager.webhook_delivered(delivery)
    assert observer.deliveries == [False, True]
