"""`RunManager`'s cron use-cases (`core.cron_use_cases`) the scheduler tests leave aside: input checks
on create and update, delete and search, and a slot another scheduler fired first."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from runplane.core.errors import InvalidInput, NotFound
from runplane.core.manager import RunManager
from runplane.core.models import Cron, CronChanges, CronFilter, NewCron, RunFilter
from runplane.core.schedule import CRONS_CHANNEL
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock
from runplane.worker.scheduler import CroniterSchedule


class OnlyOkHooks:
    """A URL guard that refuses every webhook not under `https://ok.example/`."""

    async def check(self, url: str) -> None:
        if not url.startswith("https://ok.example/"):
            raise InvalidInput(f"Webhook host blocked: {url}")


class StaleDueStore(InMemoryStore):
    """Answers `due_crons` with what it answered the first time: a scheduler that read the due
    slots just before another one fired them."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self._first: list[Cron] | None = None

    async def due_crons(self, now: datetime, limit: int = 100) -> list[Cron]:
        if self._first is None:
            self._first = await super().due_crons(now, limit)
        return self._first


def _manager(
    clock: FakeClock, store: InMemoryStore | None = None, bus: InMemoryBus | None = None
) -> RunManager:
    return RunManager(
        store or InMemoryStore(clock=clock),
        bus or InMemoryBus(),
        clock=clock,
        schedule=CroniterSchedule(),
        url_guard=OnlyOkHooks(),
    )


def _cron(cron_id: str, **changes: object) -> NewCron:
    fields: dict[str, object] = {
        "cron_id": cron_id,
        "owner": "alice",
        "assistant_id": "asst",
        "thread_id": None,
        "schedule": "* * * * *",
        "timezone": None,
        "end_time": None,
        "enabled": True,
        "on_run_completed": "delete",
        "payload": {},
        "kwargs": {"graph_id": "echo", "webhook": "https://ok.example/h"},
        "metadata": {"team": "a"},
        "multitask_strategy": "enqueue",
        "next_run_date": None,
    }
    fields.update(changes)
    return NewCron(**fields)  # type: ignore[arg-type]


async def test_a_cron_with_an_unknown_strategy_or_blocked_webhook_is_refused() -> None:
    manager = _manager(FakeClock())
    with pytest.raises(InvalidInput, match="unknown multitask_strategy 'shuffle'"):
        await manager.create_cron(_cron("c1", multitask_strategy="shuffle"))
    with pytest.raises(InvalidInput, match="blocked"):
        await manager.create_cron(_cron("c1", kwargs={"webhook": "http://10.0.0.1/h"}))
    assert await manager.count_crons("alice") == 0


async def test_an_update_checks_new_kwargs_and_keeps_the_cron_when_refused() -> None:
    clock = FakeClock()
    manager = _manager(clock)
    created = await manager.create_cron(_cron("c1"))
    with pytest.raises(InvalidInput, match="blocked"):
        await manager.update_cron("c1", CronChanges(kwargs={"webhook": "http://10.0.0.1/h"}), "alice")
    assert (await manager.get_cron("c1", "alice")).kwargs == created.kwargs
    clock.advance(30)
    updated = await manager.update_cron(
        "c1", CronChanges(kwargs={"graph_id": "echo", "webhook": "https://ok.example/other"}), "alice"
    )
    assert updated.kwargs["webhook"] == "https://ok.example/other"
    assert updated.next_run_date == created.next_run_date  # same schedule: the slot is kept


async def test_a_deleted_cron_is_gone_and_the_schedulers_are_told() -> None:
    clock = FakeClock()
    bus = InMemoryBus()
    manager = _manager(clock, bus=bus)
    await manager.create_cron(_cron("c1"))
    async with bus.listen(CRONS_CHANNEL) as hints:
        await manager.delete_cron("c1", "alice")
        async with asyncio.timeout(5):
            assert await anext(hints) == "c1"
    with pytest.raises(NotFound):
        await manager.get_cron("c1", "alice")
    with pytest.raises(NotFound):  # not twice
        await manager.delete_cron("c1", "alice")
    clock.advance(120)
    assert await manager.fire_due_crons() == []


async def test_search_filters_pages_and_refuses_bad_pages() -> None:
    manager = _manager(FakeClock())
    await manager.create_cron(_cron("c1", metadata={"team": "a"}))
    await manager.create_cron(_cron("c2", metadata={"team": "b"}))
    await manager.create_cron(_cron("c3", metadata={"team": "a"}, enabled=False))
    assert {c.cron_id for c in await manager.search_crons("alice")} == {"c1", "c2", "c3"}
    assert {c.cron_id for c in await manager.search_crons("alice", CronFilter(metadata={"team": "a"}))} == {
        "c1",
        "c3",
    }
    assert [c.cron_id for c in await manager.search_crons("alice", CronFilter(enabled=False))] == ["c3"]
    assert len(await manager.search_crons("alice", CronFilter(limit=2))) == 2
    assert await manager.search_crons("bob") == []  # another owner's crons are not listed
    with pytest.raises(InvalidInput, match="limit"):
        await manager.search_crons("alice", CronFilter(limit=-1))
    with pytest.raises(InvalidInput, match="offset"):
        await manager.search_crons("alice", CronFilter(offset=-1))


async def test_a_slot_another_scheduler_fired_is_skipped_not_fired_twice() -> None:
    clock = FakeClock()
    store = StaleDueStore(clock)
    manager = _manager(clock, store)
    await manager.create_cron(_cron("c1"))
    clock.advance(61)
    [run] = await manager.fire_due_crons()
    # The same due slot read again (as a second scheduler would have read it): not fired again.
    assert await manager.fire_due_crons() == []
    assert [r.run_id for r in await manager.list_runs(run.thread_id, "alice", RunFilter())] == [run.run_id]
    assert (await manager.get_cron("c1", "alice")).next_run_date == clock.now() + timedelta(seconds=59)
