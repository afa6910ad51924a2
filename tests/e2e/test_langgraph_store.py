"""A LangGraph project with long-term memory (`tests/e2e/memory_app`: a node taking `store: BaseStore`,
in a module with `from __future__ import annotations`) served by runplane unchanged: memories are
shared across threads and survive kill -9 of the server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph_sdk import get_sync_client

from tests._services import drop_postgres_database, fresh_postgres_database, require_postgres_url
from tests.e2e._procs import Proc, free_port

APP = Path(__file__).with_name("memory_app") / "langgraph.json"


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Proc]:
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'runplane.db'}"
    else:
        database_url = fresh_postgres_database(require_postgres_url())
    port = free_port()
    argv = [sys.executable, "-m", "runplane.cli", "serve", "--port", str(port), "--config", str(APP)]
    proc = Proc("server", "api", [*argv, "--database-url", database_url], dict(os.environ), tmp_path, port)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.kill()
        if request.param == "postgres":
            drop_postgres_database(database_url)


def remember(url: str, user: str, fact: str | None = None) -> list[str]:
    """Run the `remember` graph on a new thread; the facts it knows about `user`."""
    client = get_sync_client(url=url)
    thread = client.threads.create()
    values = client.runs.wait(thread["thread_id"], "remember", input={"user": user, "fact": fact})
    assert isinstance(values, dict), values
    return list(values["known"])


def test_memories_are_shared_across_threads_and_survive_kill_9(server: Proc) -> None:
    assert remember(server.url, "ada", "likes tea") == ["likes tea"]
    assert remember(server.url, "ada", "plays chess") == ["likes tea", "plays chess"]
    assert remember(server.url, "bob") == []  # namespaces keep users apart

    server.kill()
    server.start()
    server.wait_ready()
    assert remember(server.url, "ada") == ["likes tea", "plays chess"]
    assert remember(server.url, "bob", "sails") == ["sails"]
