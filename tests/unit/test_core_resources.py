"""`RunManager`'s assistant, thread-TTL and long-term-store use-cases (`core.resources`) over the
in-memory store, and LangGraph's in-memory store behind the `ItemStore` adapter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore as LangGraphMemoryStore

from runplane.core import resources
from runplane.core.errors import AssistantChanged, Conflict, InvalidInput, NotFound, StoreUnavailable
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.items import owner_root
from runplane.core.manager import RunManager
from runplane.core.models import SINGLE_USER, AssistantFilter, AssistantPatch, Outcome, ThreadTtl
from runplane.core.resources import merge_assistant_config, sync_config_context
from runplane.core.store import AssistantStore
from runplane.events.memory import InMemoryBus
from runplane.runtime.items import LangGraphItems
from runplane.testing import FakeClock, memory_manager

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _graph(graph_id: str, **fields: Any) -> Assistant:
    return Assistant(
        assistant_id=graph_id, graph_id=graph_id, name=graph_id, created_at=EPOCH, updated_at=EPOCH, **fields
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def manager(clock: FakeClock) -> RunManager:
    manager = memory_manager(clock=clock)
    await manager.register_graphs(
        [_graph("agent", config={"tags": ["a"]}, metadata={"kind": "demo"}), _graph("echo")]
    )
    return manager


# -- config and context ----------------------------------------------------------------------------


def test_configurable_and_context_mirror_each_other() -> None:
    config, context = sync_config_context({"configurable": {"model": "x"}}, None)
    assert config == {"configurable": {"model": "x"}} and context == {"model": "x"}
    config, context = sync_config_context({"tags": ["t"]}, {"model": "y"})
    assert config == {"tags": ["t"], "configurable": {"model": "y"}} and context == {"model": "y"}
    assert sync_config_context({}, None) == ({}, None)
    with pytest.raises(InvalidInput, match="both configurable and context"):
        sync_config_context({"configurable": {"a": 1}}, {"b": 2})


def test_a_run_overrides_its_assistant_key_by_key() -> None:
    assistant = _graph(
        "agent",
        config={"tags": ["a"], "configurable": {"model": "m", "temperature": 0}, "metadata": {"x": 1}},
        context={"model": "m", "user": "u"},
    )
    config, context = merge_assistant_config(
        assistant, {"tags": ["run"], "configurable": {"temperature": 1}}, {"model": "n"}
    )
    assert config == {
        "tags": ["run"],
        "configurable": {"model": "m", "temperature": 1},
        "metadata": {"x": 1},
    }
    assert context == {"model": "n", "user": "u"}
    assert merge_assistant_config(_graph("echo"), None, None) == ({}, {})


# -- assistants ------------------------------------------------------------------------------------


async def test_served_graphs_get_system_assistants_reachable_by_graph_name(manager: RunManager) -> None:
    by_name = await manager.get_assistant("agent")
    assert by_name.assistant_id == default_assistant_id("agent")
    assert by_name.metadata == {"created_by": "system", "kind": "demo"}
    assert by_name.config == {"tags": ["a"]}
    # Registering again (another process, a restart) keeps the assistant, even patched.
    await manager.update_assistant("agent", AssistantPatch(name="renamed"))
    await manager.register_graphs([_graph("agent")])
    assert (await manager.get_assistant("agent")).name == "renamed"


async def test_assistants_of_graphs_not_served_are_refused_and_hidden(clock: FakeClock) -> None:
    other = memory_manager(clock=clock)
    stray = await other.create_assistant("gone")  # no graphs registered: anything goes
    manager = RunManager(other.store, InMemoryBus(), clock=clock)
    await manager.register_graphs([_graph("agent")])
    with pytest.raises(NotFound, match="Graph 'gone' not found"):
        await manager.create_assistant("gone")
    with pytest.raises(NotFound):
        await manager.get_assistant(stray.assistant_id)
    with pytest.raises(NotFound):
        await manager.update_assistant(stray.assistant_id, AssistantPatch(graph_id="gone"))
    with pytest.raises(NotFound):
        await manager.search_assistants(filter=AssistantFilter(graph_id="gone"))
    assert [a.graph_id for a in await manager.search_assistants()] == ["agent"]
    assert await manager.count_assistants() == 1
    assert await other.count_assistants() == 2


async def test_create_update_and_version_an_assistant(manager: RunManager) -> None:
    created = await manager.create_assistant(
        "agent", config={"configurable": {"model": "a"}}, metadata={"team": "x"}, name="mine"
    )
    assert created.version == 1 and created.context == {"model": "a"} and created.name == "mine"
    with pytest.raises(Conflict):
        await manager.create_assistant("agent", assistant_id=created.assistant_id)
    again = await manager.create_assistant("agent", assistant_id=created.assistant_id, if_exists="do_nothing")
    assert again.assistant_id == created.assistant_id and again.version == 1

    updated = await manager.update_assistant(created.assistant_id, AssistantPatch(context={"model": "b"}))
    assert updated.version == 2
    assert updated.context == {"model": "b"} and updated.config["configurable"] == {"model": "b"}
    renamed = await manager.update_assistant(created.assistant_id, AssistantPatch(name="other"))
    assert renamed.version == 3 and renamed.context == {"model": "b"}

    versions = await manager.assistant_versions(created.assistant_id, limit=2)
    assert [v.version for v in versions] == [3, 2]
    assert [v.version for v in await manager.assistant_versions(created.assistant_id, offset=2)] == [1]
    back = await manager.set_latest_assistant_version(created.assistant_id, 1)
    assert back.version == 1 and back.name == "mine"
    with pytest.raises(InvalidInput, match="limit"):
        await manager.assistant_versions(created.assistant_id, limit=1001)
    with pytest.raises(InvalidInput, match="offset"):
        await manager.search_assistants(filter=AssistantFilter(offset=-1))
    found = await manager.search_assistants(filter=AssistantFilter(graph_id="agent", metadata={"team": "x"}))
    assert [a.assistant_id for a in found] == [created.assistant_id]


async def test_runs_are_built_from_a_copy_the_admission_checks(manager: RunManager, clock: FakeClock) -> None:
    created = await manager.create_assistant("agent", name="one")
    copy = await manager.assistant_for_run(created.assistant_id)
    assert copy == created
    # The copy is kept: another process's patch (the store itself here) does not show in it...
    assert isinstance(manager.store, AssistantStore)
    clock.advance(1)
    await manager.store.patch_assistant(created.assistant_id, SINGLE_USER, AssistantPatch(name="two"))
    assert await manager.assistant_for_run(created.assistant_id) == copy
    # ...but a run built from it is refused, with nothing written.
    with pytest.raises(AssistantChanged):
        await manager.create_run("t1", created.assistant_id, if_not_exists="create", assistant_seen=copy.seen)
    with pytest.raises(NotFound):
        await manager.get_thread("t1")
    manager.forget_assistant(created.assistant_id)
    fresh = await manager.assistant_for_run(created.assistant_id)
    assert (fresh.version, fresh.name) == (2, "two")
    run = await manager.create_run(
        "t1", created.assistant_id, if_not_exists="create", assistant_seen=fresh.seen
    )
    assert run.assistant_id == created.assistant_id
    # A change through this manager drops its copies at once (every owner's).
    await manager.update_assistant(created.assistant_id, AssistantPatch(name="three"))
    assert (await manager.assistant_for_run(created.assistant_id)).name == "three"
    await manager.set_latest_assistant_version(created.assistant_id, 1)
    assert (await manager.assistant_for_run(created.assistant_id)).name == "one"
    await manager.delete_assistant(created.assistant_id)
    with pytest.raises(NotFound):
        await manager.assistant_for_run(created.assistant_id)


async def test_copies_of_assistants_are_bounded(manager: RunManager, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_ASSISTANT_COPIES", 2)
    for owner in ("a", "b", "c"):
        await manager.assistant_for_run("agent", owner)
    # The third owner's copy started the copies over: the first owner's is read again.
    reads = 0
    assert isinstance(manager.store, AssistantStore)
    read = manager.store.get_assistant

    async def counted(assistant_id: str, owner: str) -> Assistant:
        nonlocal reads
        reads += 1
        return await read(assistant_id, owner)

    monkeypatch.setattr(manager.store, "get_assistant", counted)
    await manager.assistant_for_run("agent", "c")
    assert reads == 0
    await manager.assistant_for_run("agent", "a")
    assert reads == 1


async def test_deleting_an_assistant_cancels_its_active_runs(manager: RunManager) -> None:
    assistant = await manager.create_assistant("agent")
    running = await manager.create_run("t1", assistant.assistant_id, if_not_exists="create")
    claimed = await manager.claim("w1")
    assert claimed is not None and claimed.run_id == running.run_id
    pending = await manager.create_run("t2", assistant.assistant_id, if_not_exists="create")
    other = await manager.create_run("t3", "echo", if_not_exists="create")
    cancelled = await manager.delete_assistant(assistant.assistant_id)
    assert {run.run_id for run in cancelled} == {running.run_id, pending.run_id}
    assert (await manager.get_run(pending.run_id)).status == "interrupted"
    assert (await manager.get_run(other.run_id)).status == "pending"
    with pytest.raises(NotFound):
        await manager.get_assistant(assistant.assistant_id)


async def test_a_store_without_assistants_or_ttls_says_so(clock: FakeClock) -> None:
    class RunsOnly:
        """A store with none of the optional sides."""

    manager = RunManager(RunsOnly(), InMemoryBus(), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable, match="keeps no assistants"):
        await manager.get_assistant("agent")
    with pytest.raises(StoreUnavailable, match="keeps no thread TTLs"):
        await manager.sweep_expired_threads()


# -- thread TTL ------------------------------------------------------------------------------------


async def test_threads_past_their_ttl_are_swept_unless_a_run_came(
    manager: RunManager, clock: FakeClock
) -> None:
    idle = await manager.create_thread()
    busy = await manager.create_thread()
    kept = await manager.create_thread()
    for thread in (idle, busy):
        await manager.set_thread_ttl(thread.thread_id, ThreadTtl(minutes=1))
    await manager.set_thread_ttl(kept.thread_id, ThreadTtl(minutes=1))
    await manager.set_thread_ttl(kept.thread_id, None)
    with pytest.raises(InvalidInput, match="ttl"):
        await manager.set_thread_ttl(idle.thread_id, ThreadTtl(minutes=-1))
    await manager.create_run(busy.thread_id, "echo")
    clock.advance(120)
    swept = await manager.sweep_expired_threads()
    assert [thread.thread_id for thread in swept] == [idle.thread_id]
    with pytest.raises(NotFound):
        await manager.get_thread(idle.thread_id)
    assert (await manager.get_thread(kept.thread_id)).thread_id == kept.thread_id


# -- the long-term store ---------------------------------------------------------------------------


async def test_items_need_an_attached_store(manager: RunManager) -> None:
    with pytest.raises(StoreUnavailable, match="no long-term store"):
        await manager.get_item(("a",), "k")
    assert await manager.sweep_items() == 0


async def test_items_live_under_the_callers_root(manager: RunManager, clock: FakeClock) -> None:
    manager.attach_items(LangGraphItems(LangGraphMemoryStore(), clock=clock))
    alice, bob = owner_root("alice"), owner_root("bob")
    assert owner_root("") == () and owner_root("a.b%c") == ("a%2Eb%25c",)
    await manager.put_item(("memories", "food"), "k1", {"v": 1}, root=alice)
    await manager.put_item(("memories",), "k2", {"v": 2}, root=alice, ttl=1)
    await manager.put_item(("memories",), "k1", {"v": 3}, root=bob)

    got = await manager.get_item(("memories", "food"), "k1", root=alice)
    assert got is not None and got.namespace == ("memories", "food") and got.value == {"v": 1}
    assert await manager.get_item(("memories", "food"), "k1", root=bob) is None
    found = await manager.search_items(("memories",), root=alice)
    assert sorted((item.namespace, item.key) for item in found) == [
        (("memories",), "k2"),
        (("memories", "food"), "k1"),
    ]
    assert sorted(await manager.list_namespaces(root=alice)) == [("memories",), ("memories", "food")]
    assert await manager.list_namespaces(root=alice, max_depth=1) == [("memories",)]
    assert await manager.list_namespaces(root=alice, prefix=("memories",), suffix=("food",)) == [
        ("memories", "food")
    ]
    assert await manager.list_namespaces(root=bob) == [("memories",)]

    clock.advance(120)
    assert await manager.sweep_items() == 1
    assert await manager.get_item(("memories",), "k2", root=alice) is None
    await manager.delete_item(("memories", "food"), "k1", root=alice)
    assert await manager.search_items((), root=alice) == []


@pytest.mark.parametrize(
    ("namespace", "message"),
    [
        ((), "at least one label"),
        (("a.b",), "without periods"),
        (("",), "without periods"),
        (("a\x00",), "without periods"),
        (("langgraph", "x"), "cannot be"),
    ],
)
async def test_bad_namespaces_and_pages_are_refused(
    manager: RunManager, namespace: tuple[str, ...], message: str
) -> None:
    manager.attach_items(LangGraphItems(LangGraphMemoryStore()))
    with pytest.raises(InvalidInput, match=message):
        await manager.put_item(namespace, "k", {})


async def test_item_arguments_are_checked_before_the_store(manager: RunManager) -> None:
    manager.attach_items(LangGraphItems(LangGraphMemoryStore()))
    with pytest.raises(InvalidInput, match="ttl"):
        await manager.put_item(("a",), "k", {}, ttl=-1)
    with pytest.raises(InvalidInput, match="limit"):
        await manager.search_items(("a",), limit=5000)
    with pytest.raises(InvalidInput, match="without periods"):
        await manager.list_namespaces(prefix=("a.b",))
    with pytest.raises(InvalidInput, match="without periods"):
        await manager.get_item(("a.b",), "k")
    with pytest.raises(InvalidInput, match="without periods"):
        await manager.delete_item(("a.b",), "k")
    with pytest.raises(InvalidInput, match="without periods"):
        await manager.search_items(("a.b",))


async def test_run_outcome_on_a_deleted_assistant_keeps_the_record(manager: RunManager) -> None:
    assistant = await manager.create_assistant("agent")
    run = await manager.create_run("t1", assistant.assistant_id, if_not_exists="create")
    claimed = await manager.claim("w1")
    assert claimed is not None
    await manager.finish(claimed, Outcome("success", "idle"))
    assert await manager.delete_assistant(assistant.assistant_id) == []
    assert (await manager.get_run(run.run_id)).status == "success"
