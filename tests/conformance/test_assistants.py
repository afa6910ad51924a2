"""Assistants: versions, visibility, search and deletion, the same on every store."""

from __future__ import annotations

from typing import Any

import pytest

from runplane.core.errors import Conflict, NotFound
from runplane.core.models import AssistantFilter, AssistantPatch, NewAssistant
from runplane.core.store import AssistantStore, Store
from runplane.testing import FakeClock
from tests.conformance._support import OTHER, OWNER, SINGLE_USER, OpenAnother, add_run, claim


def assistants(store: Store) -> AssistantStore:
    assert isinstance(store, AssistantStore)
    return store


def new(assistant_id: str = "a1", owner: str = OWNER, **changes: Any) -> NewAssistant:
    fields: dict[str, Any] = {"graph_id": "agent", "name": "mine", "config": {"tags": ["t"]}}
    return NewAssistant(assistant_id=assistant_id, owner=owner, **{**fields, **changes})


async def test_put_records_version_one(store: Store, clock: FakeClock) -> None:
    created = await assistants(store).put_assistant(
        new(context={"x": 1}, metadata={"k": "v"}, description="d")
    )
    assert (created.assistant_id, created.graph_id, created.name, created.version) == (
        "a1",
        "agent",
        "mine",
        1,
    )
    assert (
        created.config == {"tags": ["t"]} and created.context == {"x": 1} and created.metadata == {"k": "v"}
    )
    assert created.description == "d"
    assert created.created_at == created.updated_at == clock.now()
    assert await assistants(store).get_assistant("a1", OWNER) == created
    [version] = await assistants(store).assistant_versions("a1", OWNER, {}, 10, 0)
    assert version.version == 1 and version.config == created.config


async def test_if_exists(store: Store) -> None:
    first = await assistants(store).put_assistant(new())
    with pytest.raises(Conflict):
        await assistants(store).put_assistant(new(name="again"))
    assert await assistants(store).put_assistant(new(name="again"), if_exists="do_nothing") == first
    # Another owner can neither take the id nor see it through `do_nothing`.
    with pytest.raises(Conflict):
        await assistants(store).put_assistant(new(owner=OTHER), if_exists="do_nothing")


async def test_patch_adds_an_immutable_version(store: Store, clock: FakeClock) -> None:
    created = await assistants(store).put_assistant(new(metadata={"k": "v"}))
    clock.advance(1)
    second = await assistants(store).patch_assistant(
        "a1", OWNER, AssistantPatch(metadata={"k2": 2}, name="two")
    )
    assert second.version == 2 and second.name == "two" and second.metadata == {"k": "v", "k2": 2}
    assert second.config == created.config  # kept: not in the patch
    assert second.created_at == created.created_at and second.updated_at == clock.now()
    clock.advance(1)
    third = await assistants(store).patch_assistant(
        "a1", OWNER, AssistantPatch(config={"recursion_limit": 5})
    )
    assert third.version == 3 and third.config == {"recursion_limit": 5} and third.name == "two"
    versions = await assistants(store).assistant_versions("a1", OWNER, {}, 10, 0)
    assert [v.version for v in versions] == [3, 2, 1]
    assert versions[2].name == "mine" and versions[2].metadata == {"k": "v"}  # unchanged by later patches
    assert [v.version for v in await assistants(store).assistant_versions("a1", OWNER, {"k2": 2}, 10, 0)] == [
        3,
        2,
    ]
    assert [v.version for v in await assistants(store).assistant_versions("a1", OWNER, {}, 1, 1)] == [2]


async def test_set_latest_goes_back_and_patch_continues_numbering(store: Store, clock: FakeClock) -> None:
    await assistants(store).put_assistant(new(context={"c": 1}))
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(name="two", context={"c": 2}))
    clock.advance(5)
    back = await assistants(store).set_latest_assistant_version("a1", OWNER, 1)
    assert (back.version, back.name, back.context, back.updated_at) == (1, "mine", {"c": 1}, clock.now())
    assert await assistants(store).get_assistant("a1", OWNER) == back
    with pytest.raises(NotFound):
        await assistants(store).set_latest_assistant_version("a1", OWNER, 9)
    third = await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(description="d"))
    assert third.version == 3 and third.name == "mine"  # based on the current (version 1)


async def test_visibility_and_system_assistants(store: Store) -> None:
    await assistants(store).put_assistant(new())
    system = await assistants(store).put_assistant(
        new("sys", owner=SINGLE_USER, system=True, metadata={"created_by": "system"})
    )
    for call in (
        assistants(store).get_assistant("a1", OTHER),
        assistants(store).assistant_versions("a1", OTHER, {}, 10, 0),
        assistants(store).patch_assistant("a1", OTHER, AssistantPatch(name="x")),
        assistants(store).delete_assistant("a1", OTHER),
        assistants(store).set_latest_assistant_version("a1", OTHER, 1),
    ):
        with pytest.raises(NotFound):
            await call
    # A system assistant is everyone's to read, and only single-user mode's to change.
    assert await assistants(store).get_assistant("sys", OTHER) == system
    with pytest.raises(Conflict):
        await assistants(store).patch_assistant("sys", OTHER, AssistantPatch(name="x"))
    with pytest.raises(Conflict):
        await assistants(store).delete_assistant("sys", OWNER)
    patched = await assistants(store).patch_assistant("sys", SINGLE_USER, AssistantPatch(name="x"))
    assert patched.version == 2 and await assistants(store).get_assistant("sys", OTHER) == patched


async def test_search_filters_sorts_and_pages(store: Store, clock: FakeClock) -> None:
    store_ = assistants(store)
    await store_.put_assistant(new("a1", name="Alpha", metadata={"team": "x", "n": 1}))
    clock.advance(1)
    await store_.put_assistant(new("a2", name="beta", graph_id="other", metadata={"team": "x"}))
    clock.advance(1)
    await store_.put_assistant(new("a3", name="Gamma alpha", metadata={"team": "y"}))
    await store_.put_assistant(new("b1", owner=OTHER, name="alpha of another"))
    await store_.put_assistant(new("s1", owner=SINGLE_USER, system=True, name="system"))

    async def ids(**changes: Any) -> list[str]:
        return [a.assistant_id for a in await store_.search_assistants(OWNER, AssistantFilter(**changes))]

    assert await ids() == ["s1", "a3", "a2", "a1"]  # newest first; a tie goes by id
    assert await ids(graph_id="other") == ["a2"]
    assert await ids(name="ALPHA", sort_by="created_at", sort_order="asc") == ["a1", "a3"]
    assert await ids(metadata={"team": "x"}, sort_by="assistant_id", sort_order="asc") == ["a1", "a2"]
    assert await ids(sort_by="name", sort_order="asc") == ["a1", "a2", "a3", "s1"]
    assert await ids(sort_by="name", sort_order="desc", limit=2, offset=1) == ["a3", "a2"]
    assert await ids(graph_ids=("agent",), sort_by="assistant_id", sort_order="asc") == ["a1", "a3", "s1"]
    assert await store_.count_assistants(OWNER, AssistantFilter()) == 4
    assert await store_.count_assistants(OWNER, AssistantFilter(name="alpha")) == 2
    assert await store_.count_assistants(OTHER, AssistantFilter()) == 2


async def test_delete_returns_active_runs_and_keeps_finished_ones(store: Store) -> None:
    await assistants(store).put_assistant(new())
    await add_run(store, "done", "t1", assistant_id="a1")
    running = await claim(store)
    await add_run(store, "queued", "t1", assistant_id="a1")
    await add_run(store, "elsewhere", "t2", assistant_id="agent")
    active = await assistants(store).delete_assistant("a1", OWNER)
    assert [r.run_id for r in active] == [running.run_id, "queued"]
    with pytest.raises(NotFound):
        await assistants(store).get_assistant("a1", OWNER)
    with pytest.raises(NotFound):
        await assistants(store).assistant_versions("a1", OWNER, {}, 10, 0)
    assert (await store.get_run("done", OWNER)).assistant_id == "a1"  # runs keep their record
    # The id is free again.
    assert (await assistants(store).put_assistant(new())).version == 1


async def test_versions_survive_reopening(store: Store, open_another: OpenAnother) -> None:
    await assistants(store).put_assistant(new())
    await assistants(store).patch_assistant("a1", OWNER, AssistantPatch(name="two"))
    other = await open_another()
    assert (await assistants(other).get_assistant("a1", OWNER)).version == 2
    assert [v.name for v in await assistants(other).assistant_versions("a1", OWNER, {}, 10, 0)] == [
        "two",
        "mine",
    ]
