"""LangGraph custom auth on assistants and the long-term store: `@auth.on.assistants` and
`@auth.on.store` handlers get LangGraph's values, can deny, stamp, filter and rewrite namespaces."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph.store.memory import InMemoryStore
from langgraph_sdk import Auth

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings
from runplane.runtime.items import LangGraphItems
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime, api_worker

BASE_URL = "http://runplane.test"
#: Two tokens of one identity in two teams: owner isolation alone cannot tell them apart.
USERS = {
    "alice-a": {"identity": "alice", "permissions": ["team:a"]},
    "alice-b": {"identity": "alice", "permissions": ["team:b"]},
    "bob": {"identity": "bob", "permissions": ["team:a"]},
}


def _team(ctx: Auth.types.AuthContext) -> str:
    return next(p for p in ctx.permissions if p.startswith("team:")).removeprefix("team:")


def _auth() -> tuple[Auth, list[tuple[str, str, dict[str, Any]]]]:
    auth = Auth()
    seen: list[tuple[str, str, dict[str, Any]]] = []

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Any:
        return USERS[(authorization or "").removeprefix("Bearer ")]

    @auth.on.assistants
    async def assistants(ctx: Auth.types.AuthContext, value: Any) -> Any:
        seen.append(("assistants", ctx.action, copy.deepcopy(dict(value))))
        if ctx.action == "delete" and _team(ctx) != "a":
            return False
        if ctx.action in ("create", "update"):
            value.setdefault("metadata", {})["team"] = _team(ctx)
        return {"team": _team(ctx)}

    @auth.on.store
    async def store(ctx: Auth.types.AuthContext, value: Any) -> Any:
        seen.append(("store", ctx.action, copy.deepcopy(dict(value))))
        if value.get("namespace") and value["namespace"][0] == "forbidden":
            raise Auth.exceptions.HTTPException(status_code=403, detail="not there")
        # LangGraph's documented pattern: scope every namespace to the user.
        value["namespace"] = (ctx.user.identity, *(value.get("namespace") or ()))
        return None

    return auth, seen


@pytest.fixture
async def world() -> AsyncIterator[tuple[Any, InMemoryStore, list[tuple[str, str, dict[str, Any]]]]]:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))
    graph_store = InMemoryStore()
    manager.attach_items(LangGraphItems(graph_store))
    runtime = api_runtime()
    worker = api_worker(manager, runtime)
    await worker.start()
    auth, seen = _auth()
    app = create_app(manager, runtime, ApiSettings(custom_auth=auth))
    clients: list[httpx.AsyncClient] = []

    def as_user(token: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            headers={"Authorization": f"Bearer {token}"},
        )
        clients.append(client)
        return client

    try:
        yield as_user, graph_store, seen
    finally:
        for client in clients:
            await client.aclose()
        await worker.stop()


async def test_assistant_handlers_stamp_and_filter(world: Any) -> None:
    as_user, _, seen = world
    team_a, team_b = as_user("alice-a"), as_user("alice-b")
    created = (
        await team_a.post("/assistants", json={"graph_id": "echo", "name": "a's", "metadata": {"x": 1}})
    ).json()
    aid = created["assistant_id"]
    assert created["metadata"] == {"x": 1, "team": "a"}  # stamped by the handler
    assert seen[-1] == (
        "assistants",
        "create",
        {
            "assistant_id": None,
            "graph_id": "echo",
            "config": {},
            "context": None,
            "metadata": {"x": 1},
            "name": "a's",
        },
    )
    # The same identity in team b: the filter hides the assistant everywhere, exactly as missing.
    assert (await team_b.get(f"/assistants/{aid}")).status_code == 404
    assert (await team_b.patch(f"/assistants/{aid}", json={"name": "b's"})).status_code == 404
    assert (await team_b.post(f"/assistants/{aid}/versions", json={})).status_code == 404
    assert (await team_b.post(f"/assistants/{aid}/latest", json={"version": 1})).status_code == 404
    assert aid not in {a["assistant_id"] for a in (await team_b.post("/assistants/search", json={})).json()}
    assert (await team_b.post("/assistants/count", json={})).json() == 0  # system ones carry no team
    thread = (await team_b.post("/threads", json={})).json()["thread_id"]
    run = await team_b.post(f"/threads/{thread}/runs", json={"assistant_id": aid})
    assert run.status_code == 404  # a run may use only an assistant its caller may read
    # Team a sees and changes it; the patch is stamped too; delete is denied for team b.
    assert (await team_a.get(f"/assistants/{aid}")).status_code == 200
    patched = (await team_a.patch(f"/assistants/{aid}", json={"metadata": {"y": 2}})).json()
    assert patched["metadata"] == {"x": 1, "team": "a", "y": 2} and patched["version"] == 2
    assert [
        a["assistant_id"]
        for a in (await team_a.post("/assistants/search", json={"metadata": {"x": 1}})).json()
    ] == [aid]
    assert (await team_b.delete(f"/assistants/{aid}")).status_code == 403
    assert (await team_a.delete(f"/assistants/{aid}")).status_code == 204
    # Another identity never sees alice's assistant (owner isolation, under the filters).
    assert (await as_user("bob").post("/assistants/count", json={})).json() == 0


async def test_store_handlers_rewrite_namespaces(world: Any) -> None:
    as_user, graph_store, seen = world
    alice, bob = as_user("alice-a"), as_user("bob")
    put = {"namespace": ["notes"], "key": "k", "value": {"text": "hi"}}
    assert (await alice.put("/store/items", json=put)).status_code == 204
    assert seen[-1] == (
        "store",
        "put",
        {"namespace": ("notes",), "key": "k", "value": {"text": "hi"}, "index": None, "ttl": None},
    )
    stored = await graph_store.aget(("alice", "notes"), "k")
    assert stored is not None and stored.value == {"text": "hi"}  # where the handler put it
    # The handler scopes reads the same way: bob's ("notes",) is ("bob", "notes").
    assert (await bob.get("/store/items", params={"namespace": "notes", "key": "k"})).json() is None
    mine = (await alice.get("/store/items", params={"namespace": "notes", "key": "k"})).json()
    assert mine["value"] == {"text": "hi"} and mine["namespace"] == ["alice", "notes"]  # as LangGraph answers
    assert (await bob.post("/store/items/search", json={"namespace_prefix": ["notes"]})).json() == {
        "items": []
    }
    assert (await alice.post("/store/namespaces", json={})).json() == {"namespaces": [["alice", "notes"]]}
    denied = await alice.put("/store/items", json={**put, "namespace": ["forbidden"]})
    assert denied.status_code == 403 and denied.json()["detail"] == "not there"
    assert await graph_store.asearch(("forbidden",)) == []
    gone = {"namespace": ["notes"], "key": "k"}
    assert (await bob.request("DELETE", "/store/items", json=gone)).status_code == 204
    assert await graph_store.aget(("alice", "notes"), "k") is not None  # bob deleted his own (nothing)
    assert (await alice.request("DELETE", "/store/items", json=gone)).status_code == 204
    assert await graph_store.aget(("alice", "notes"), "k") is None
