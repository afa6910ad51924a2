"""A run built from an assistant is admitted only while that is still the assistant's current
version (`NewRun.assistant_seen`), the same on every store: the API builds runs from this process's
copy of an assistant, which another process may have patched or deleted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from runplane.core.errors import AssistantChanged, NotFound
from runplane.core.graphs import Assistant
from runplane.core.models import AssistantPatch, CronFire, NewAssistant, RunFilter
from runplane.core.store import AssistantStore, Store
from runplane.testing import FakeClock
from tests.conformance._support import OWNER, OpenAnother, add_run, claim, make_thread, new_run
from tests.conformance.test_crons import new_cron


def assistants(store: Store) -> AssistantStore:
    assert isinstance(store, AssistantStore)
    return store


async def put(store: Store, clock: FakeClock) -> Assistant:
    created = await assistants(store).put_assistant(
        NewAssistant(assistant_id="a1", owner=OWNER, graph_id="agent", name="mine")
    )
    clock.advance(1)
    return created


async def admit(store: Store, seen: Assistant, run_id: str = "r1", **changes: Any) -> None:
    await store.create_run(new_run(run_id, assistant_id="a1", assistant_seen=seen.seen, **changes))


async def assert_nothing_admitted(store: Store, run_id: str = "r1", *, thread_id: str = "t1") -> None:
    with pytest.raises(NotFound):
        await store.get_run(run_id, OWNER)
    with pytest.raises(NotFound):  # not even the thread `if_not_exists="create"` would have made
        await store.get_thread(thread_id, OWNER)


async def test_the_current_version_is_admitted(store: Store, clock: FakeClock) -> None:
    seen = await put(store, clock)
    await admit(store, seen)
    assert (await store.get_run("r1", OWNER)).assistant_id == "a1"
    # Also through the admission that applies a multitask strategy (an active run on the thread).
    await admit(store, seen, "r2")
    assert [run.run_id for run in await store.list_runs("t1", OWNER, RunFilter())] == ["r2", "r1"]


async def test_a_patched_assistant_is_refused_and_nothing_is_written(store: Store, clock: FakeClock) -> None:
    seen = await put(store, clock)
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(config={"tags": ["new"]}))
    with pytest.raises(AssistantChanged):
        await admit(store, seen, idempotency_key="k", fingerprint="f")
    await assert_nothing_admitted(store)
    # The idempotency key was not taken either: a run built from the current version uses it.
    current = await assistants(store).get_assistant("a1", OWNER)
    await admit(store, current, idempotency_key="k", fingerprint="f")
    assert (await store.get_run("r1", OWNER)).status == "pending"


async def test_a_deleted_assistant_is_refused(store: Store, clock: FakeClock) -> None:
    seen = await put(store, clock)
    await assistants(store).delete_assistant("a1", OWNER)
    with pytest.raises(AssistantChanged):
        await admit(store, seen)
    await assert_nothing_admitted(store)


async def test_an_assistant_deleted_and_created_again_is_another(store: Store, clock: FakeClock) -> None:
    seen = await put(store, clock)
    await assistants(store).delete_assistant("a1", OWNER)
    again = await put(store, clock)
    assert again.version == seen.version  # the version alone does not tell them apart
    with pytest.raises(AssistantChanged):
        await admit(store, seen)
    await admit(store, again)


async def test_a_version_made_current_again_is_admitted(store: Store, clock: FakeClock) -> None:
    # Versions are immutable: version 1 made current again is the content the run was built from.
    seen = await put(store, clock)
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(name="two"))
    await assistants(store).set_latest_assistant_version("a1", OWNER, 1)
    await admit(store, seen)


async def test_the_check_applies_on_a_busy_thread(store: Store, clock: FakeClock) -> None:
    # The admission that applies a multitask strategy checks too (on PostgreSQL, another path).
    seen = await put(store, clock)
    await make_thread(store)
    await add_run(store, "r0", assistant_id="a1", if_not_exists="reject")
    await claim(store)
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(name="two"))
    with pytest.raises(AssistantChanged):
        await admit(store, seen, strategy="interrupt", if_not_exists="reject")
    running = await store.get_run("r0", OWNER)
    assert running.status == "running" and running.cancel_action is None  # not asked to cancel
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)


async def test_a_change_through_another_instance_is_seen(
    store: Store, clock: FakeClock, open_another: OpenAnother
) -> None:
    # Another process on the same database (the memory store has no other instance to share with).
    seen = await put(store, clock)
    other = await open_another()
    await assistants(other).patch_assistant("a1", OWNER, AssistantPatch(name="two"))
    with pytest.raises(AssistantChanged):
        await admit(store, seen)
    await assert_nothing_admitted(store)


async def test_a_cron_slot_does_not_move_for_a_refused_run(store: Store, clock: FakeClock) -> None:
    # A cron's admission is the store's transaction on every store (on PostgreSQL, not the
    # one-statement admission): it checks too, and its slot moves only with an admitted run.
    seen = await put(store, clock)
    cron = await store.create_cron(new_cron("c1", clock))
    assert cron.next_run_date is not None
    slot = CronFire("c1", cron.next_run_date, cron.next_run_date + timedelta(seconds=60))
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(name="two"))
    with pytest.raises(AssistantChanged):
        await admit(store, seen, cron=slot)
    await assert_nothing_admitted(store)
    assert (await store.get_cron("c1", OWNER)).next_run_date == cron.next_run_date
    await admit(store, await assistants(store).get_assistant("a1", OWNER), cron=slot)
    assert (await store.get_cron("c1", OWNER)).next_run_date == slot.next_run_date
