"""A LangGraph project with custom auth (`tests/e2e/custom_auth_app`) served by runplane, unchanged.

The project is loaded as `runplane serve` loads it (langgraph.json -> graphs and `auth.path`), served
over a real loopback socket, and driven by the official SDK as two users who differ only by their
`Authorization` header. Also here: `runplane serve` as a subprocess never logs credentials.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import AuthenticationError, NotFoundError, PermissionDeniedError

from runplane.api import ApiSettings, create_app
from runplane.cli import load_custom_auth
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.graphs import load_runtime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import serve
from tests.e2e.test_cli import free_port

APP = Path(__file__).with_name("custom_auth_app") / "langgraph.json"
RUNPLANE = [sys.executable, "-m", "runplane.cli"]


def _messages(*texts: str) -> dict[str, Any]:
    return {"messages": list(texts)}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    manager: RunManager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))
    runtime = load_runtime(str(APP), InMemorySaver())
    worker = Worker(manager, runtime, concurrency=2, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(
        manager, runtime, ApiSettings(heartbeat_seconds=0.2, custom_auth=load_custom_auth(str(APP)))
    )
    try:
        async with serve(app) as base_url:
            yield base_url
    finally:
        await worker.stop()


@pytest.fixture
async def users(url: str) -> AsyncIterator[tuple[LangGraphClient, LangGraphClient]]:
    alice = get_client(url=url, api_key=None, headers={"Authorization": "Bearer token-alice"})
    bob = get_client(url=url, api_key=None, headers={"Authorization": "Bearer token-bob"})
    try:
        yield alice, bob
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_authentication_is_required(url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "token-alice"}):
        client = get_client(url=url, api_key=None, headers=headers)
        try:
            with pytest.raises(AuthenticationError):
                await client.threads.create()
        finally:
            await client.aclose()
    async with httpx.AsyncClient(base_url=url) as raw:
        refused = await raw.post("/threads/search", json={})
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Invalid or missing token"}
        assert (await raw.get("/ok")).status_code == 200  # health checks stay public


async def test_each_user_sees_only_their_own(users: tuple[LangGraphClient, LangGraphClient]) -> None:
    alice, bob = users
    thread = await alice.threads.create(metadata={"topic": "tea"})
    thread_id = thread["thread_id"]
    assert thread["metadata"] is not None
    assert thread["metadata"]["owner"] == "alice"  # stamped by the project's @auth.on handler
    output = await alice.runs.wait(thread_id, "agent", input=_messages("hi"))
    assert output == {"messages": ["hi", "echo: hi"]}
    run = (await alice.runs.list(thread_id))[0]
    # Reads carry no metadata to stamp: a history search is not narrowed by the owner stamp.
    assert len(await alice.threads.get_history(thread_id)) >= 2
    assert (await alice.threads.get_state(thread_id))["values"] == output

    # bob: alice's thread and run do not exist for him.
    for call in (
        bob.threads.get(thread_id),
        bob.threads.get_state(thread_id),
        bob.threads.get_history(thread_id),
        bob.threads.update(thread_id, metadata={"x": 1}),
        bob.runs.list(thread_id),
        bob.runs.get(thread_id, run["run_id"]),
        bob.runs.join(thread_id, run["run_id"]),
        bob.runs.create(thread_id, "agent", input=_messages("mine now")),
    ):
        with pytest.raises(httpx.HTTPStatusError) as refused:  # the SDK's join raises it unwrapped
            await call
        assert refused.value.response.status_code == 404
    assert await bob.threads.search() == []
    assert await bob.threads.count() == 0

    # bob's own work is unaffected, and invisible to alice.
    mine = await bob.threads.create()
    output = await bob.runs.wait(mine["thread_id"], "agent", input=_messages("yo"))
    assert isinstance(output, dict) and output["messages"][-1] == "echo: yo"
    assert [t["thread_id"] for t in await alice.threads.search()] == [thread_id]
    with pytest.raises(NotFoundError):
        await alice.threads.get(mine["thread_id"])

    # The graphs' assistants are shared (the project allows assistants to everyone).
    assert {a["graph_id"] for a in await bob.assistants.search()} == {"agent"}

    # alice's thread is as she left it.
    after = await alice.threads.get(thread_id)
    assert after["metadata"] == {
        **thread["metadata"],
        "graph_id": "agent",
        "assistant_id": run["assistant_id"],
    }
    assert after["values"] == {"messages": ["hi", "echo: hi"]}


async def test_handlers_stamp_and_deny(users: tuple[LangGraphClient, LangGraphClient]) -> None:
    alice, bob = users
    thread = await alice.threads.create()
    # The handler re-stamps the owner on every update: a user cannot give a thread away.
    updated = await alice.threads.update(thread["thread_id"], metadata={"owner": "bob", "note": 1})
    assert updated["metadata"] is not None
    assert updated["metadata"]["owner"] == "alice" and updated["metadata"]["note"] == 1
    # A run created on a new thread (if_not_exists) is born owned by its creator.
    new_id = str(uuid.uuid4())
    await alice.runs.wait(new_id, "agent", input=_messages("x"), if_not_exists="create")
    metadata = (await alice.threads.get(new_id))["metadata"]
    assert metadata is not None and metadata["owner"] == "alice"
    # Stateless runs work, and a kept temporary thread belongs to its creator.
    kept = await alice.runs.create(None, "agent", input=_messages("y"), on_completion="keep")
    await alice.runs.join(kept["thread_id"], kept["run_id"])
    metadata = (await alice.threads.get(kept["thread_id"]))["metadata"]
    assert metadata is not None and metadata["owner"] == "alice"
    with pytest.raises(NotFoundError):
        await bob.threads.get(kept["thread_id"])
    # bob lacks the permission the project's delete handler asks for.
    own = await bob.threads.create()
    with pytest.raises(PermissionDeniedError):
        await bob.threads.delete(own["thread_id"])
    await alice.threads.delete(thread["thread_id"])
    with pytest.raises(NotFoundError):
        await alice.threads.get(thread["thread_id"])


# -- secrets stay out of the logs --------------------------------------------------------------------


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`runplane serve` with API keys, logging at DEBUG to a file."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "RUNPLANE_API_KEYS": "sk-alice-0123456789:alice,sk-bob-9876543210:bob",
        "RUNPLANE_DATABASE_URL": "memory://",
        "RUNPLANE_LOG_LEVEL": "DEBUG",
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*RUNPLANE, "serve", "--port", str(port), "--workers", "1"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("runplane serve did not start:\n" + log_path.read_text())
                time.sleep(0.05)  # nothing to await on another process's socket
            yield url, log_path
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_serve_with_api_keys_never_logs_credentials(keyed_server: tuple[str, Path]) -> None:
    url, log_path = keyed_server
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.post("/threads", json={}).status_code == 401
        assert (
            http.post("/threads", json={}, headers={"x-api-key": "sk-wrong-secret-55555"}).status_code == 401
        )
        alice = {"x-api-key": "sk-alice-0123456789"}
        thread = http.post("/threads", json={}, headers=alice).json()
        bearer = {"Authorization": "Bearer sk-bob-9876543210"}
        assert http.get(f"/threads/{thread['thread_id']}", headers=bearer).status_code == 404
        waited = http.post(
            f"/threads/{thread['thread_id']}/runs/wait",
            json={"assistant_id": "echo", "input": {}},
            headers=alice,
        )
        assert waited.status_code == 200
        # A handler failing under a request carrying a key logs a traceback: still no key in it.
        assert (
            http.post(
                "/threads", content=b"{", headers={**alice, "content-type": "application/json"}
            ).status_code
            == 422
        )
    logs = log_path.read_text()
    assert "DEBUG" in logs or "INFO" in logs  # the server did log
    for secret in ("sk-alice-0123456789", "sk-bob-9876543210", "sk-wrong-secret-55555"):
        assert secret not in logs
