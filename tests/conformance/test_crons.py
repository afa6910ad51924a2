"""Crons: CRUD under owner isolation, and slots that fire exactly once however many schedulers race."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from runplane.core.errors import Conflict, NotFound, SlotTaken, ThreadBusy
from runplane.core.models import CronChanges, CronFilter, CronFire, NewCron, RunFilter
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OTHER, OWNER, OpenAnother, add_run, make_thread, new_run


def new_cron(cron_id: str, clock: FakeClock, *, thread_id: str | None = None, **changes: Any) -> NewCron:
    base = NewCron(
        cron_id=cron_id,
        owner=OWNER,
        assistant_id="agent",
        thread_id=thread_id,
        schedule="* * * * *",
        timezone=None,
        end_time=None,
        enabled=True,
        on_run_completed=None if thread_id else "delete",
        payload={"assistant_id": "agent", "schedule": "* * * * *", "input": {"n": 1}},
        kwargs={"graph_id": "agent", "input": {"n": 1}},
        metadata={"team": "a"},
        multitask_strategy="enqueue",
        next_run_date=clock.now() + timedelta(seconds=60),
    )
    return replace(base, **changes)


def fire(cron_id: str, slot: Any, clock: FakeClock) -> CronFire:
    return CronFire(cron_id, slot, slot + timedelta(seconds=60))


async def test_create_get_update_delete(store: Store, clock: FakeClock) -> None:
    created = await store.create_cron(new_cron("c1", clock))
    assert created.created_at == created.updated_at == clock.now()
    assert created.next_run_date == clock.now() + timedelta(seconds=60)
    assert (created.enabled, created.on_run_completed, created.thread_id) == (True, "delete", None)
    assert await store.get_cron("c1", OWNER) == created
    clock.advance(5)
    updated = await store.update_cron(
        "c1",
        OWNER,
        CronChanges(
            metadata={"extra": 1},
            enabled=False,
            end_time=clock.now() + timedelta(days=1),
            next_run_date=clock.now() + timedelta(seconds=30),
            set_next_run_date=True,
        ),
    )
    assert updated.metadata == {"team": "a", "extra": 1}
    assert updated.enabled is False
    assert updated.end_time == clock.now() + timedelta(days=1)
    assert updated.next_run_date == clock.now() + timedelta(seconds=30)
    assert updated.updated_at == clock.now() and updated.created_at == created.created_at
    assert updated.payload == created.payload and updated.schedule == created.schedule
    cleared = await store.update_cron("c1", OWNER, CronChanges(clear_end_time=True))
    assert cleared.end_time is None and cleared.next_run_date == updated.next_run_date
    assert await store.get_cron("c1", OWNER) == cleared
    await store.delete_cron("c1", OWNER)
    with pytest.raises(NotFound):
        await store.get_cron("c1", OWNER)
    with pytest.raises(NotFound):
        await store.delete_cron("c1", OWNER)


async def test_crons_are_isolated_by_owner(store: Store, clock: FakeClock) -> None:
    await store.create_cron(new_cron("c1", clock))
    with pytest.raises(NotFound):
        await store.get_cron("c1", OTHER)
    with pytest.raises(NotFound):
        await store.update_cron("c1", OTHER, CronChanges(enabled=False))
    with pytest.raises(NotFound):
        await store.delete_cron("c1", OTHER)
    assert await store.search_crons(OTHER, CronFilter()) == []
    assert await store.count_crons(OTHER, CronFilter()) == 0
    assert (await store.get_cron("c1", OWNER)).enabled is True
    with pytest.raises(Conflict):
        await store.create_cron(replace(new_cron("c1", clock), owner=OTHER))


async def test_a_thread_cron_needs_the_owners_thread(store: Store, clock: FakeClock) -> None:
    with pytest.raises(NotFound):
        await store.create_cron(new_cron("c1", clock, thread_id="t1"))
    await make_thread(store, "t1", owner=OTHER)
    with pytest.raises(NotFound):
        await store.create_cron(new_cron("c1", clock, thread_id="t1"))
    await make_thread(store, "t2")
    cron = await store.create_cron(new_cron("c2", clock, thread_id="t2"))
    assert cron.thread_id == "t2" and cron.on_run_completed is None
    await store.delete_thread("t2", OWNER)  # a thread's crons go with it
    with pytest.raises(NotFound):
        await store.get_cron("c2", OWNER)


async def test_search_filters_sorts_and_counts(store: Store, clock: FakeClock) -> None:
    await make_thread(store, "t1")
    await store.create_cron(new_cron("c1", clock))
    clock.advance(1)
    await store.create_cron(new_cron("c2", clock, thread_id="t1", metadata={"team": "b"}, assistant_id="x"))
    clock.advance(1)
    await store.create_cron(new_cron("c3", clock, enabled=False, next_run_date=None))
    ids = lambda crons: [c.cron_id for c in crons]  # noqa: E731
    assert ids(await store.search_crons(OWNER, CronFilter())) == ["c3", "c2", "c1"]
    assert ids(await store.search_crons(OWNER, CronFilter(sort_order="asc"))) == ["c1", "c2", "c3"]
    assert ids(await store.search_crons(OWNER, CronFilter(limit=1, offset=1))) == ["c2"]
    assert ids(await store.search_crons(OWNER, CronFilter(thread_id="t1"))) == ["c2"]
    assert ids(await store.search_crons(OWNER, CronFilter(assistant_id="x"))) == ["c2"]
    assert ids(await store.search_crons(OWNER, CronFilter(enabled=False))) == ["c3"]
    assert ids(await store.search_crons(OWNER, CronFilter(metadata={"team": "a"}, sort_order="asc"))) == [
        "c1",
        "c3",
    ]
    # A cron without a next slot sorts first ascending and last descending.
    by_next = CronFilter(sort_by="next_run_date", sort_order="asc")
    assert ids(await store.search_crons(OWNER, by_next)) == ["c3", "c1", "c2"]
    assert ids(await store.search_crons(OWNER, replace(by_next, sort_order="desc"))) == ["c2", "c1", "c3"]
    by_id = CronFilter(sort_by="cron_id", sort_order="asc")
    assert ids(await store.search_crons(OWNER, by_id)) == ["c1", "c2", "c3"]
    assert await store.count_crons(OWNER, CronFilter()) == 3
    assert await store.count_crons(OWNER, CronFilter(metadata={"team": "b"})) == 1


async def test_due_crons_and_next_slot(store: Store, clock: FakeClock) -> None:
    assert await store.next_cron_slot() is None
    first = clock.now() + timedelta(seconds=60)
    await store.create_cron(new_cron("c1", clock))
    await store.create_cron(new_cron("c2", clock, next_run_date=first + timedelta(seconds=30)))
    await store.create_cron(
        new_cron("off", clock, enabled=False, next_run_date=first - timedelta(seconds=30))
    )
    ended = first - timedelta(seconds=30)
    await store.create_cron(
        new_cron("ended", clock, next_run_date=ended, end_time=ended - timedelta(seconds=1))
    )
    assert await store.next_cron_slot() == first  # neither disabled nor ended crons count
    assert await store.due_crons(clock.now()) == []
    clock.advance(90)
    due = await store.due_crons(clock.now())
    assert [c.cron_id for c in due] == ["c1", "c2"]  # disabled and ended crons never fire


async def test_a_slot_admits_one_run_and_moves_the_cron(store: Store, clock: FakeClock) -> None:
    cron = await store.create_cron(new_cron("c1", clock))
    assert cron.next_run_date is not None
    clock.advance(60)
    slot = fire("c1", cron.next_run_date, clock)
    admission = await store.create_run(new_run("r1", "t1", cron=slot, thread_metadata={"graph_id": "agent"}))
    assert admission.run.status == "pending"
    assert (await store.get_thread("t1", OWNER)).metadata == {"graph_id": "agent"}
    assert (await store.get_cron("c1", OWNER)).next_run_date == slot.next_run_date
    with pytest.raises(SlotTaken):
        await store.create_run(new_run("r2", "t2", cron=slot))
    with pytest.raises(NotFound):
        await store.get_run("r2", OWNER)
    with pytest.raises(NotFound):  # the loser created nothing, not even its thread
        await store.get_thread("t2", OWNER)
    assert await store.skip_cron_slot(slot) is False


async def test_a_refused_run_leaves_the_slot_to_skip(store: Store, clock: FakeClock) -> None:
    cron = await store.create_cron(new_cron("c1", clock))
    assert cron.next_run_date is not None
    await add_run(store, "busy", "t1")
    slot = fire("c1", cron.next_run_date, clock)
    with pytest.raises(ThreadBusy):
        await store.create_run(new_run("r1", "t1", cron=slot, strategy="reject"))
    # Nothing moved: the scheduler skips the slot explicitly (and only once).
    assert (await store.get_cron("c1", OWNER)).next_run_date == cron.next_run_date
    assert await store.skip_cron_slot(slot) is True
    assert await store.skip_cron_slot(slot) is False
    assert (await store.get_cron("c1", OWNER)).next_run_date == slot.next_run_date
    assert [r.run_id for r in await store.list_runs("t1", OWNER, RunFilter())] == ["busy"]


async def test_disabled_or_rescheduled_crons_do_not_fire_a_stale_slot(store: Store, clock: FakeClock) -> None:
    cron = await store.create_cron(new_cron("c1", clock))
    assert cron.next_run_date is not None
    slot = fire("c1", cron.next_run_date, clock)
    await store.update_cron("c1", OWNER, CronChanges(enabled=False))
    with pytest.raises(SlotTaken):
        await store.create_run(new_run("r1", "t1", cron=slot))
    await store.update_cron(
        "c1", OWNER, CronChanges(enabled=True, next_run_date=clock.now(), set_next_run_date=True)
    )
    with pytest.raises(SlotTaken):
        await store.create_run(new_run("r1", "t1", cron=slot))


async def test_racing_schedulers_fire_a_slot_once(
    store: Store, clock: FakeClock, open_another: OpenAnother
) -> None:
    other = await open_another()
    cron = await store.create_cron(new_cron("c1", clock))
    assert cron.next_run_date is not None
    slot = fire("c1", cron.next_run_date, clock)

    async def attempt(target: Store, run_id: str) -> str | None:
        try:
            await target.create_run(new_run(run_id, f"thread-{run_id}", cron=slot))
        except SlotTaken:
            return None
        return run_id

    results = await asyncio.gather(*(attempt(s, f"r{i}") for i, s in enumerate([store, other] * 4)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get_cron("c1", OWNER)).next_run_date == slot.next_run_date
