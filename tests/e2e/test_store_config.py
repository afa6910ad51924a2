"""The langgraph.json `store` and `checkpointer` sections, honoured by a real `runplane serve`
(`tests/e2e/store_app`, driven through the SDK): a semantic search index with a local embedding
function, store item TTLs swept by LangGraph's own sweeper, and `checkpointer.ttl`."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_sync_client

from tests._services import drop_postgres_database, fresh_postgres_database, require_postgres_url
from tests.e2e._procs import Proc, free_port, wait_until

APP = Path(__file__).with_name("store_app")


def _server(tmp_path: Path, config: str, database_url: str) -> Proc:
    port = free_port()
    argv = [sys.executable, "-m", "runplane.cli", "serve", "--port", str(port), "--config", str(APP / config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")}
    return Proc("server", "api", [*argv, "--database-url", database_url], env, tmp_path, port)


def _database(tmp_path: Path, backend: str) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'runplane.db'}"
    return fresh_postgres_database(require_postgres_url())


def _serve(tmp_path: Path, config: str, backend: str) -> Iterator[Proc]:
    database_url = _database(tmp_path, backend)
    proc = _server(tmp_path, config, database_url)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()
        if backend == "postgres":
            drop_postgres_database(database_url)


def _vector_search_available(backend: str, database_url: str) -> bool:
    """Whether the backend can hold LangGraph's index here: SQLite's is the sqlite-vec extension
    (this Python's sqlite3 must load extensions), PostgreSQL's is pgvector (must be installed)."""
    if backend == "sqlite":
        return hasattr(sqlite3.Connection, "enable_load_extension")
    if backend == "postgres":
        with psycopg.connect(database_url) as conn:
            return (
                conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
                is not None
            )
    return True


@pytest.fixture(params=["sqlite", "postgres"])
def ttl_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proc]:
    yield from _serve(tmp_path, "ttl.json", request.param)


def notes(url: str, **state: Any) -> tuple[str, Any]:
    client = get_sync_client(url=url)
    thread = client.threads.create()
    return thread["thread_id"], client.runs.wait(thread["thread_id"], "notes", input=state)


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres"])
def test_store_index_ranks_search_results_by_meaning(tmp_path: Path, backend: str) -> None:
    database_url = _database(tmp_path, backend)
    proc = _server(tmp_path, "index.json", database_url)
    try:
        proc.start()
        if _vector_search_available(backend, database_url):
            proc.wait_ready()
            _check_ranking(proc)
        else:
            # Refused at start with the reason, never served without the index it was asked for.
            assert proc.popen is not None and proc.popen.wait(timeout=60) != 0
            assert "'store.index' on " in proc.log_text()
    finally:
        proc.kill()
        if backend == "postgres":
            drop_postgres_database(database_url)


def _check_ranking(index_server: Proc) -> None:
    for key, text in [("a", "dogs bark loudly"), ("b", "cats purr softly"), ("c", "markets fell sharply")]:
        notes(index_server.url, op="put", user="ada", key=key, text=text)
    _, values = notes(index_server.url, op="search", user="ada", query="purr cats")
    found = values["found"]
    assert found[0]["text"] == "cats purr softly"
    scores = [item["score"] for item in found]
    assert all(isinstance(score, float) for score in scores), found
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_store_and_checkpointer_ttls_expire_data(ttl_server: Proc) -> None:
    client = get_sync_client(url=ttl_server.url)
    # Stored (listed by the same run, right after its put) and checkpointed (the run's state).
    thread_id, stored = notes(ttl_server.url, op="put", user="bob", key="k", text="short-lived")
    assert stored["text"] == "short-lived"
    assert [item["text"] for item in stored["found"]] == ["short-lived"]

    def note_gone() -> bool:
        return bool(notes(ttl_server.url, op="search", user="bob")[1]["found"] == [])

    def checkpoints_gone() -> bool:
        return client.threads.get_state(thread_id)["values"] == {}

    # Swept by LangGraph's store sweeper and the checkpointer TTL sweeper (0.6 s TTLs and sweeps).
    wait_until(note_gone, 60, "the store item to expire", interval=0.2)
    wait_until(checkpoints_gone, 60, "the thread's checkpoints to expire", interval=0.2)
    assert client.threads.get_history(thread_id) == []
