"""LangGraph custom auth over the agent protocols: each inner operation is authorized as the runs API
route it stands for, so `@auth.on` handlers refuse, stamp and filter exactly as on the runs API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import Auth

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime, api_worker

BASE_URL = "http://runplane.test"
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


def owner_auth() -> Auth:
    """Users by token; each thread is stamped with its owner and filtered by it; `reader` may read
    but not run anything. Assistants are everyone's."""
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Any:
        token = (authorization or "").removeprefix("Bearer ")
        if token not in ("alice", "bob", "reader"):
            raise Auth.exceptions.HTTPException(status_code=401, detail="who are you?")
        return token

    @auth.on.threads
    async def stamp_and_filter(ctx: Auth.types.AuthContext, value: Any) -> Any:
        if ctx.user.identity == "reader" and ctx.action == "create_run":
            raise Auth.exceptions.HTTPException(status_code=403, detail="readers cannot run")
        if isinstance(value, dict) and isinstance(value.get("metadata"), dict):
            value["metadata"]["owner"] = ctx.user.identity
        return {"owner": ctx.user.identity}

    return auth


@pytest.fixture
async def as_user() -> AsyncIterator[Any]:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))
    runtime = api_runtime()
    worker = api_worker(manager, runtime)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.05, custom_auth=owner_auth()))
    clients: list[httpx.AsyncClient] = []

    def client(token: str) -> httpx.AsyncClient:
        made = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(made)
        return made

    try:
        yield client
    finally:
        for made in clients:
            await made.aclose()
        await worker.stop()


def rpc(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}


async def test_mcp_calls_are_authorized_as_stateless_runs(as_user: Any) -> None:
    reader, alice = as_user("reader"), as_user("alice")
    listed = (await reader.post("/mcp", json=rpc("tools/list", {}), headers=MCP_HEADERS)).json()
    assert "echo" in {tool["name"] for tool in listed["result"]["tools"]}
    call = rpc("tools/call", {"name": "echo", "arguments": {"n": 1}})
    refused = (await reader.post("/mcp", json=call, headers=MCP_HEADERS)).json()
    assert refused["error"] == {"code": -32602, "message": "readers cannot run"}
    allowed = (await alice.post("/mcp", json=call, headers=MCP_HEADERS)).json()
    assert "error" not in allowed and not allowed["result"].get("isError")


async def test_a2a_contexts_belong_to_their_owner(as_user: Any) -> None:
    alice, bob = as_user("alice"), as_user("bob")
    message = {"role": "user", "messageId": "m1", "parts": [{"kind": "data", "data": {"n": 1}}]}
    sent = (await alice.post("/a2a/echo", json=rpc("message/send", {"message": message}))).json()
    task = sent["result"]
    assert task["status"]["state"] == "completed"
    thread = (await alice.get(f"/threads/{task['contextId']}")).json()
    assert thread["metadata"]["owner"] == "alice"  # stamped as a run on the thread would be
    assert (await alice.post("/a2a/echo", json=rpc("tasks/get", {"id": task["id"]}))).json()["result"]["id"]
    foreign = (await bob.post("/a2a/echo", json=rpc("tasks/get", {"id": task["id"]}))).json()
    assert foreign["error"] == {"code": -32001, "message": f"Task not found: {task['id']}"}
    into = {**message, "contextId": task["contextId"]}
    written = (await bob.post("/a2a/echo", json=rpc("message/send", {"message": into}))).json()
    assert written["error"]["code"] == -32602
    refused = (
        await as_user("reader").post("/a2a/echo", json=rpc("message/send", {"message": message}))
    ).json()
    assert refused["error"] == {"code": -32602, "message": "readers cannot run"}


async def test_thread_streaming_commands_are_authorized_as_runs(as_user: Any) -> None:
    thread_id = str(uuid.uuid4())
    start = {"id": 1, "method": "run.start", "params": {"assistant_id": "echo", "input": {"n": 2}}}
    # Commands are authorized as creating a run on the thread, like the runs API refuses it.
    refused = await as_user("reader").post(f"/threads/{thread_id}/commands", json=start)
    assert (refused.status_code, refused.json()) == (403, {"detail": "readers cannot run"})
    alice = as_user("alice")
    started = (await alice.post(f"/threads/{thread_id}/commands", json=start)).json()
    assert started["type"] == "success"
    assert (await alice.get(f"/threads/{thread_id}")).json()["metadata"]["owner"] == "alice"
    foreign = await as_user("bob").post(f"/threads/{thread_id}/commands", json=start)
    assert foreign.status_code == 404
