"""Threads: create, read, update, state, delete."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from runplane.core.errors import Conflict, LeaseLost, NotFound
from runplane.core.models import NewThread, RunFilter
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import (
    OTHER,
    OWNER,
    SINGLE_USER,
    OpenAnother,
    add_run,
    claim,
    make_thread,
    new_run,
    outcome,
    running_run,
    unwrap,
)


async def test_create_thread_without_id_generates_a_uuid(store: Store, clock: FakeClock) -> None:
    first = await store.create_thread(NewThread(owner=OWNER))
    second = await store.create_thread(NewThread(owner=OWNER))
    assert str(uuid.UUID(first.thread_id)) == first.thread_id
    assert first.thread_id != second.thread_id
    assert await store.get_thread(first.thread_id, OWNER) == first


async def test_create_thread_records_every_field(store: Store, clock: FakeClock) -> None:
    thread = await make_thread(store, "t1", metadata={"k": "v", "n": 1})
    assert thread.thread_id == "t1"
    assert thread.owner == OWNER
    assert thread.status == "idle"
    assert thread.created_at == thread.updated_at == clock.now()
    assert thread.metadata == {"k": "v", "n": 1}
    assert thread.values is None
    assert thread.interrupts == {}
    assert await store.get_thread("t1", OWNER) == thread


async def test_single_user_owner_is_an_owner_like_any_other(store: Store) -> None:
    thread = await make_thread(store, "t1", owner=SINGLE_USER)
    assert await store.get_thread("t1", SINGLE_USER) == thread
    with pytest.raises(NotFound):
        await store.get_thread("t1", OWNER)


async def test_duplicate_thread_id_conflicts(store: Store) -> None:
    await make_thread(store, "t1")
    with pytest.raises(Conflict):
        await make_thread(store, "t1")


async def test_if_exists_do_nothing_returns_the_existing_thread(store: Store, clock: FakeClock) -> None:
    original = await make_thread(store, "t1", metadata={"a": 1})
    clock.advance(5)
    again = await store.create_thread(
        NewThread(owner=OWNER, thread_id="t1", metadata={"b": 2}), if_exists="do_nothing"
    )
    assert again == original


async def test_if_exists_do_nothing_on_another_owners_id_conflicts(store: Store) -> None:
    await make_thread(store, "t1", owner=OWNER)
    with pytest.raises(Conflict):
        await store.create_thread(NewThread(owner=OTHER, thread_id="t1"), if_exists="do_nothing")
    with pytest.raises(Conflict):
        await store.create_thread(NewThread(owner=OTHER, thread_id="t1"))


async def test_get_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_thread("nope", OWNER)


async def test_update_thread_merges_metadata(store: Store, clock: FakeClock) -> None:
    created = await make_thread(store, "t1", metadata={"a": 1, "b": {"x": 1}})
    clock.advance(2)
    updated = await store.update_thread("t1", OWNER, {"b": {"y": 2}, "c": None})
    # A shallow merge, as LangGraph's: a nested dict replaces the old one.
    assert updated.metadata == {"a": 1, "b": {"y": 2}, "c": None}
    assert updated.updated_at == clock.now()
    assert updated.created_at == created.created_at
    assert updated.status == "idle"
    assert await store.get_thread("t1", OWNER) == updated


async def test_update_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.update_thread("nope", OWNER, {"a": 1})


async def test_set_thread_state_on_idle_thread(store: Store, clock: FakeClock) -> None:
    await make_thread(store, "t1")
    clock.advance(1)
    values = {"messages": [{"role": "user", "content": "hé ✓"}], "n": 1.5, "ok": True}
    interrupts = {"task-1": [{"value": "approve?", "id": "i1"}]}
    thread = await store.set_thread_state("t1", OWNER, values, interrupts, "interrupted")
    assert thread.values == values
    assert thread.interrupts == interrupts
    assert thread.status == "interrupted"
    assert thread.updated_at == clock.now()
    assert await store.get_thread("t1", OWNER) == thread


async def test_set_thread_state_without_status_keeps_it(store: Store) -> None:
    await make_thread(store, "t1")
    await store.set_thread_state("t1", OWNER, {"a": 1}, {}, "error")
    thread = await store.set_thread_state("t1", OWNER, None, {"x": []})
    assert thread.status == "error"
    assert thread.values is None
    assert thread.interrupts == {"x": []}


async def test_set_thread_state_status_is_ignored_while_a_run_is_active(store: Store) -> None:
    await add_run(store, "r1", "t1")
    thread = await store.set_thread_state("t1", OWNER, {"a": 1}, {}, "idle")
    assert thread.status == "busy"
    assert thread.values == {"a": 1}
    await claim(store)
    thread = await store.set_thread_state("t1", OWNER, {"a": 2}, {}, "error")
    assert thread.status == "busy"


async def test_set_state_of_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.set_thread_state("nope", OWNER, {}, {}, "idle")


async def test_delete_thread_removes_it_with_all_runs(store: Store) -> None:
    await add_run(store, "done", "t1")
    done = await claim(store)
    await store.finish_run("done", done.attempt, outcome())
    await add_run(store, "running", "t1")
    running = await claim(store)
    await add_run(store, "pending", "t1")

    active = await store.delete_thread("t1", OWNER)

    assert sorted(run.run_id for run in active) == ["pending", "running"]
    assert {run.run_id: run.status for run in active} == {"pending": "pending", "running": "running"}
    with pytest.raises(NotFound):
        await store.get_thread("t1", OWNER)
    for run_id in ("done", "running", "pending"):
        with pytest.raises(NotFound):
            await store.get_run(run_id, OWNER)
    # The worker that held the deleted run loses it at its next write.
    with pytest.raises(LeaseLost):
        await store.renew_lease("running", running.attempt, "w1", 30)
    with pytest.raises(LeaseLost):
        await store.finish_run("running", running.attempt, outcome())
    assert await store.claim_run("w1", 30) is None
    assert await store.expired_runs() == []


async def test_delete_idle_thread_returns_no_runs(store: Store) -> None:
    await make_thread(store, "t1")
    assert await store.delete_thread("t1", OWNER) == []
    with pytest.raises(NotFound):
        await store.delete_thread("t1", OWNER)


async def test_deleted_ids_can_be_reused(store: Store) -> None:
    await add_run(store, "r1", "t1")
    await store.delete_thread("t1", OWNER)
    thread = await make_thread(store, "t1")
    assert thread.status == "idle"
    admission = await store.create_run(new_run("r1", "t1"))
    assert admission.run.run_id == "r1"
    assert [run.run_id for run in await store.list_runs("t1", OWNER, RunFilter(limit=1000))] == ["r1"]


async def test_records_are_copied_in_and_out(store: Store) -> None:
    raw = unwrap(store)  # the checking proxy would (rightly) flag the mutations below
    metadata: dict[str, Any] = {"nested": {"a": 1}, "list": [1]}
    created = await raw.create_thread(NewThread(owner=OWNER, thread_id="t1", metadata=metadata))
    metadata["nested"]["a"] = 2
    metadata["list"].append(2)
    created.metadata["nested"]["a"] = 3
    fetched = await raw.get_thread("t1", OWNER)
    assert fetched.metadata == {"nested": {"a": 1}, "list": [1]}

    kwargs = {"input": {"messages": ["hi"]}}
    admission = await raw.create_run(new_run("r1", "t1", kwargs=kwargs, metadata={"m": [1]}))
    kwargs["input"]["messages"].append("mutated")
    admission.run.kwargs.input["messages"].append("mutated too")
    admission.run.metadata["m"].append(2)
    run = await raw.get_run("r1", OWNER)
    assert run.kwargs.input == {"messages": ["hi"]}
    assert run.metadata == {"m": [1]}

    values = {"v": [1]}
    thread = await raw.set_thread_state("t1", OWNER, values, {"i": {"x": 1}})
    values["v"].append(2)
    assert thread.values is not None
    thread.values["v"].append(3)
    thread.interrupts["i"]["x"] = 2
    fetched = await raw.get_thread("t1", OWNER)
    assert fetched.values == {"v": [1]}
    assert fetched.interrupts == {"i": {"x": 1}}


async def test_json_values_round_trip(store: Store) -> None:
    metadata = {
        "str": 'ünïcødé ✓ "quoted" \\ back',
        "int": 2**53,
        "neg": -7,
        "float": 0.1,
        "bool": False,
        "none": None,
        "list": [1, "two", None, [3]],
        "dict": {"deep": {"deeper": []}},
        "empty": {},
    }
    await make_thread(store, "t1", metadata=metadata)
    assert (await store.get_thread("t1", OWNER)).metadata == metadata
    await add_run(store, "r1", "t1", kwargs={"input": metadata}, metadata=metadata)
    run = await store.get_run("r1", OWNER)
    assert run.kwargs.input == metadata
    assert run.metadata == metadata


async def test_open_and_migrate_are_idempotent(store: Store, open_another: OpenAnother) -> None:
    await make_thread(store, "t1", metadata={"kept": True})
    raw = unwrap(store)
    await raw.open()
    migrate = getattr(raw, "migrate", None)
    if migrate is not None:
        await migrate()
    other = await open_another()  # a second process starting on a migrated database
    assert (await other.get_thread("t1", OWNER)).metadata == {"kept": True}
    assert (await store.get_thread("t1", OWNER)).metadata == {"kept": True}


async def test_admitted_run_leaves_its_config_on_the_thread(store: Store) -> None:
    """As LangGraph's server: the run's keys over the thread's, except `configurable`, where the
    thread's own win over the defaults the run brings."""
    assert (await make_thread(store, "t1")).config == {}
    first = {"tags": ["a"], "recursion_limit": 7, "configurable": {"model": "default"}}
    await add_run(store, "r1", "t1", thread_config=first)
    assert (await store.get_thread("t1", OWNER)).config == first
    second = {"tags": ["b"], "configurable": {"model": "other", "extra": 1}}
    await add_run(store, "r2", "t1", thread_config=second)
    expected = {"tags": ["b"], "recursion_limit": 7, "configurable": {"model": "default", "extra": 1}}
    assert (await store.get_thread("t1", OWNER)).config == expected
    await add_run(store, "r3", "t1")  # no config given: the thread's stays
    assert (await store.get_thread("t1", OWNER)).config == expected
    # A thread created by its first run gets the run's config too.
    await add_run(store, "r4", "t2", thread_config={"tags": ["c"], "configurable": {}})
    assert (await store.get_thread("t2", OWNER)).config == {"tags": ["c"], "configurable": {}}


async def test_config_merges_into_an_idle_threads_own(store: Store) -> None:
    """The same merge when each run is admitted on an idle thread (PostgreSQL admits those in one
    statement, which merges in SQL), with `configurable` absent, empty or not an object."""
    await make_thread(store, "t1")
    configs: list[dict[str, Any]] = [
        {"tags": ["a"], "recursion_limit": 7, "configurable": {"model": "default", "n": [1]}},
        {"tags": ["b"], "configurable": {"model": "other", "extra": 1}},
        {"recursion_limit": 3},
        {"configurable": None},
        {"configurable": {}},
    ]
    expected: dict[str, Any] = {}
    for i, config in enumerate(configs):
        await add_run(store, f"r{i}", "t1", thread_config=config)
        expected = {
            **expected,
            **config,
            "configurable": {**(config.get("configurable") or {}), **(expected.get("configurable") or {})},
        }
        assert (await store.get_thread("t1", OWNER)).config == expected, i
        run = await claim(store)
        await store.finish_run(run.run_id, run.attempt, outcome())
    assert expected["configurable"] == {"model": "default", "n": [1], "extra": 1}


async def test_thread_error_is_its_last_runs_error(store: Store) -> None:
    run = await running_run(store, "r1")
    await store.finish_run(run.run_id, run.attempt, outcome("error", "error", error="ValueError: boom"))
    assert (await store.get_thread("t1", OWNER)).error == "ValueError: boom"
    await add_run(store, "r2")
    run = await claim(store)
    await store.finish_run(run.run_id, run.attempt, outcome())
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == "idle" and thread.error is None


async def test_thread_error_after_a_lost_worker(store: Store, clock: FakeClock) -> None:
    """A run that ends in error because its workers kept dying leaves its reason on the thread too."""
    running = await running_run(store, "r1")
    clock.advance(31)
    failed = await store.recover_run("r1", running.attempt, max_attempts=1)
    assert failed.status == "error"
    thread = await store.get_thread("t1", OWNER)
    assert thread.status == "error" and thread.error == failed.error and failed.error
