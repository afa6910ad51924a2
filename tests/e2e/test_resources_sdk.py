"""Assistants, the long-term store and thread lifecycle through the official `langgraph-sdk`, against
a real `runplane serve` (SQLite and PostgreSQL) running the `memory_app` graph: every SDK method of
`client.assistants`, `client.store` and the thread lifecycle of `client.threads`."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError

from runplane.core.graphs import default_assistant_id
from tests._services import drop_postgres_database, fresh_postgres_database, require_postgres_url
from tests.e2e._procs import Proc, free_port, wait_until

APP = Path(__file__).with_name("memory_app") / "langgraph.json"


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proc]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'runplane.db'}"
    else:
        database_url = fresh_postgres_database(require_postgres_url())
    port = free_port()
    argv = [sys.executable, "-m", "runplane.cli", "serve", "--port", str(port), "--config", str(APP)]
    env = {**os.environ, "RUNPLANE_SWEEP_SECONDS": "0.2"}
    proc = Proc("server", "api", [*argv, "--database-url", database_url], env, tmp_path, port)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()
        if request.param == "postgres":
            drop_postgres_database(database_url)


def test_assistants(server: Proc) -> None:
    client = get_sync_client(url=server.url)
    system = client.assistants.get("remember")
    assert system["assistant_id"] == default_assistant_id("remember")  # LangGraph's id
    assert system["metadata"] == {"created_by": "system"}
    created = client.assistants.create(
        "remember",
        config={"recursion_limit": 9},
        context={"tone": "dry"},
        metadata={"team": "a"},
        name="mine",
    )
    aid = created["assistant_id"]
    assert created["version"] == 1 and created["config"]["configurable"] == {"tone": "dry"}
    with pytest.raises(ConflictError):
        client.assistants.create("remember", assistant_id=aid)
    assert client.assistants.create("remember", assistant_id=aid, if_exists="do_nothing")["version"] == 1
    updated = client.assistants.update(aid, metadata={"more": 1}, name="renamed")
    assert updated["version"] == 2 and updated["metadata"] == {"team": "a", "more": 1}
    assert [v["version"] for v in client.assistants.get_versions(aid)] == [2, 1]
    assert [v["version"] for v in client.assistants.get_versions(aid, metadata={"more": 1})] == [2]
    assert client.assistants.set_latest(aid, 1)["name"] == "mine"
    assert client.assistants.get(aid)["version"] == 1
    assert {a["assistant_id"] for a in client.assistants.search(metadata={"team": "a"})} == {aid}
    page = client.assistants.search(limit=1, response_format="object")
    assert len(page["assistants"]) == 1 and page["next"] == "1"
    assert [a["name"] for a in client.assistants.search(name="MIN", select=["name"])] == ["mine"]
    assert client.assistants.count(graph_id="remember") == 2
    assert client.assistants.get_graph(aid)["nodes"]
    assert client.assistants.get_schemas(aid)["graph_id"] == "remember"
    assert client.assistants.get_subgraphs(aid) == {}

    # A run takes its assistant's config and context (the run's own win) and records the version.
    thread = client.threads.create()
    run = client.runs.create(thread["thread_id"], aid, input={"user": "x"}, context={"extra": 1})
    kwargs = run["kwargs"]  # type: ignore[typeddict-item]  # the SDK's Run omits kwargs
    assert kwargs["context"] == {"tone": "dry", "extra": 1}
    assert kwargs["config"]["recursion_limit"] == 9 and kwargs["assistant_version"] == 1
    client.runs.join(thread["thread_id"], run["run_id"])
    client.assistants.delete(aid)
    with pytest.raises(NotFoundError):
        client.assistants.get(aid)
    assert client.runs.get(thread["thread_id"], run["run_id"])["status"] == "success"  # runs stay


def test_store_is_the_graphs_store(server: Proc) -> None:
    client = get_sync_client(url=server.url)
    # Written over HTTP, read by the graph.
    client.store.put_item(["facts", "ada"], "likes tea", {"fact": "likes tea"})
    thread = client.threads.create()
    values = client.runs.wait(thread["thread_id"], "remember", input={"user": "ada", "fact": "plays chess"})
    assert isinstance(values, dict) and values["known"] == ["likes tea", "plays chess"]
    # Written by the graph, read over HTTP.
    item = client.store.get_item(["facts", "ada"], "plays chess")
    assert (
        item is not None
        and item["value"] == {"fact": "plays chess"}
        and item["namespace"] == ["facts", "ada"]
    )
    assert client.store.get_item(["facts", "ada"], "nothing") is None
    found = client.store.search_items(["facts"], filter={"fact": "likes tea"})
    assert [i["key"] for i in found["items"]] == ["likes tea"]
    assert client.store.list_namespaces(prefix=["facts"]) == {"namespaces": [["facts", "ada"]]}
    client.store.delete_item(["facts", "ada"], "likes tea")
    assert client.store.get_item(["facts", "ada"], "likes tea") is None
    # TTLs expire items (swept in the background every 0.2 s here).
    client.store.put_item(["tmp"], "soon", {"v": 1}, ttl=0.005)  # type: ignore[arg-type]  # minutes
    client.store.put_item(["tmp"], "kept", {"v": 2})

    def expired() -> bool:
        return client.store.get_item(["tmp"], "soon", refresh_ttl=False) is None

    wait_until(expired, 30, "the item's TTL to be swept")
    assert client.store.get_item(["tmp"], "kept") is not None


def test_thread_lifecycle(server: Proc) -> None:
    client = get_sync_client(url=server.url)
    short = client.threads.create(ttl=0.005, metadata={"k": "short"})  # type: ignore[arg-type]  # minutes
    kept = client.threads.create(metadata={"k": "kept"})
    patched = client.threads.create()
    client.threads.update(patched["thread_id"], metadata={"p": 1}, ttl={"ttl": 0.005, "strategy": "delete"})

    def swept() -> bool:
        return client.threads.count(metadata={"k": "short"}) == 0 and not client.threads.search(
            ids=[patched["thread_id"]]
        )

    wait_until(swept, 30, "the threads' TTL to be swept")
    with pytest.raises(NotFoundError):
        client.threads.get(short["thread_id"])
    assert client.threads.get(kept["thread_id"])["metadata"] == {"k": "kept"}

    for fact in ("a", "b"):
        client.runs.wait(kept["thread_id"], "remember", input={"user": "u", "fact": fact})
    history = client.threads.get_history(kept["thread_id"], limit=100)
    assert len(history) > 1
    found = client.threads.search(
        ids=[kept["thread_id"]], extract={"last": "values.known[-1]", "k": "metadata.k"}, select=["thread_id"]
    )
    assert [dict(t) for t in found] == [
        {"thread_id": kept["thread_id"], "extracted": {"last": "b", "k": "kept"}}
    ]
    storage = client.http.get(f"/threads/{kept['thread_id']}/storage")
    assert storage["checkpoints"]["count"] == len(history) and storage["total_bytes"] > 0

    # The SDK types the copy as None; the server answers the new thread, as LangGraph's does.
    copy: Any = client.threads.copy(kept["thread_id"])  # type: ignore[func-returns-value]
    assert client.threads.prune([kept["thread_id"]], strategy="keep_latest") == {"pruned_count": 1}
    assert len(client.threads.get_history(kept["thread_id"], limit=100)) == 1
    values = client.threads.get_state(kept["thread_id"])["values"]
    assert isinstance(values, dict) and values["known"] == ["a", "b"]
    assert client.threads.prune([copy["thread_id"]]) == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        client.threads.get(copy["thread_id"])


def test_join_stream_follows_the_threads_runs(server: Proc) -> None:
    async def scenario() -> list[Any]:
        client = get_client(url=server.url)
        thread = await client.threads.create()
        thread_id = thread["thread_id"]
        parts: list[Any] = []

        async def listen() -> None:
            async for part in await client.threads.join_stream(thread_id):
                parts.append(part)
                if sum(1 for p in parts if p.event == "metadata" and p.data.get("status") == "run_done") == 2:
                    return

        # The first run waits 3 s to start: the stream joins while it is active (so follows it from
        # its start), and the second run is admitted after it.
        first = await client.runs.create(
            thread_id, "remember", input={"user": "s", "fact": "one"}, after_seconds=3
        )
        listening = asyncio.create_task(listen())
        second = await client.runs.create(thread_id, "remember", input={"user": "s", "fact": "two"})
        await client.runs.join(thread_id, first["run_id"])
        await client.runs.join(thread_id, second["run_id"])
        await asyncio.wait_for(listening, 30)
        return parts

    parts = asyncio.run(scenario())
    values = [p.data["known"] for p in parts if p.event == "values" and "known" in p.data]
    # Run one's result; then run two's first state (the thread's, with its input) and its result.
    assert values == [["one"], ["one"], ["one", "two"]]
    assert [p.data["status"] for p in parts if p.event == "metadata" and "status" in p.data] == [
        "run_done"
    ] * 2
