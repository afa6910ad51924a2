"""LangGraph custom auth in-process: authentication arguments, handler choice, stamping, filters."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import Auth

from runplane.api import ApiSettings, create_app
from runplane.api.app import ENDPOINTS
from runplane.api.authz import ACCESS, CustomAuthGuard, check_access_table, filter_matches, split_filters
from runplane.api.routing import Endpoint
from runplane.core.manager import ManagerSettings, RunManager
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime, api_worker

BASE_URL = "http://runplane.test"


def _token_auth(users: dict[str, Any]) -> Auth:
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Any:
        token = (authorization or "").removeprefix("Bearer ")
        if token not in users:
            raise Auth.exceptions.HTTPException(status_code=401, detail="who are you?")
        return users[token]

    return auth


@pytest.fixture
def manager() -> RunManager:
    return memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))


@pytest.fixture
async def serve_auth(
    manager: RunManager,
) -> AsyncIterator[Any]:
    """`await serve_auth(auth)` -> a client factory `as_user(token)` over an app using `auth`."""
    runtime = api_runtime()
    worker = api_worker(manager, runtime)
    await worker.start()
    clients: list[httpx.AsyncClient] = []

    def serve(auth: Auth) -> Any:
        app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.05, custom_auth=auth))

        def as_user(token: str | None) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=headers
            )
            clients.append(client)
            return client

        return as_user

    try:
        yield serve
    finally:
        for client in clients:
            await client.aclose()
        await worker.stop()


# -- pure pieces ------------------------------------------------------------------------------------


def test_filter_matches() -> None:
    meta = {"owner": "alice", "team": ["a", "b"], "n": 1}
    assert filter_matches(meta, None) and filter_matches(meta, {})
    assert filter_matches(meta, {"owner": "alice", "n": 1})
    assert filter_matches(meta, {"owner": {"$eq": "alice"}})
    assert filter_matches(meta, {"team": {"$contains": "a"}})
    assert filter_matches(meta, {"team": {"$contains": ["b", "a"]}})
    assert not filter_matches(meta, {"owner": "bob"})
    assert not filter_matches(meta, {"missing": None})
    assert not filter_matches(meta, {"team": {"$contains": "c"}})
    assert not filter_matches(meta, {"team": {"$contains": ["a", "c"]}})
    assert not filter_matches(meta, {"owner": {"$contains": "alice"}})  # not a list
    assert filter_matches({"d": {"x": 1}}, {"d": {"x": 1}})  # a plain object is compared whole
    with pytest.raises(ValueError, match="unsupported filter"):
        filter_matches(meta, {"owner": {"$ne": "bob"}})
    assert split_filters({"a": 1, "b": {"$eq": 2}, "c": {"$contains": 3}}) == (
        {"a": 1, "b": 2},
        {"c": {"$contains": 3}},
    )


def test_every_route_has_an_authorization_rule() -> None:
    check_access_table(ENDPOINTS)
    assert set(ACCESS) == {(e.method, e.path) for e in ENDPOINTS}
    with pytest.raises(ValueError, match="GET /new"):
        check_access_table([*ENDPOINTS, Endpoint("GET", "/new", ENDPOINTS[0].handler, "New", "X")])


def test_handler_choice_follows_langgraph() -> None:
    auth = Auth()

    @auth.on
    async def everything(ctx: Auth.types.AuthContext, value: Any) -> None: ...

    @auth.on.threads
    async def threads(ctx: Auth.types.AuthContext, value: Any) -> None: ...

    @auth.on.threads.create
    async def create(ctx: Auth.types.AuthContext, value: Any) -> None: ...

    @auth.on(resources="*", actions="search")
    async def searches(ctx: Auth.types.AuthContext, value: Any) -> None: ...

    guard = CustomAuthGuard(auth)
    assert guard.handler_for("threads", "create") is create
    assert guard.handler_for("threads", "read") is threads
    assert guard.handler_for("threads", "search") is threads  # the resource beats the action wildcard
    assert guard.handler_for("assistants", "search") is searches
    assert guard.handler_for("assistants", "read") is everything
    assert CustomAuthGuard(Auth()).handler_for("threads", "read") is None


# -- authentication ---------------------------------------------------------------------------------


async def test_authenticate_receives_what_it_asks_for(serve_auth: Any) -> None:
    seen: list[dict[str, Any]] = []
    auth = Auth()

    @auth.authenticate
    async def authenticate(
        method: str,
        path: str,
        path_params: dict[str, str],
        query_params: Any,
        headers: dict[bytes, bytes],
        authorization: str | None,
        body: Any,
    ) -> Auth.types.MinimalUserDict:
        seen.append(
            {
                "method": method,
                "path": path,
                "path_params": path_params,
                "query": dict(query_params),
                "header": headers.get(b"x-tenant"),
                "authorization": authorization,
                "body": body,
            }
        )
        return {"identity": "carol", "permissions": ["p1"], "display_name": "Carol", "tier": "gold"}  # type: ignore[typeddict-unknown-key]

    users: list[Any] = []

    @auth.on
    async def record(ctx: Auth.types.AuthContext, value: Any) -> None:
        users.append((ctx.user, ctx.permissions, ctx.resource, ctx.action))

    client = serve_auth(auth)("tok")
    thread = (await client.post("/threads", json={"metadata": {"a": 1}}, headers={"x-tenant": "t1"})).json()
    got = await client.get(f"/threads/{thread['thread_id']}/runs", params={"limit": 5})
    assert got.status_code == 200
    assert seen[0] == {
        "method": "POST",
        "path": "/threads",
        "path_params": {},
        "query": {},
        "header": b"t1",
        "authorization": "Bearer tok",
        "body": {"metadata": {"a": 1}},  # read for the handler, still delivered to the route
    }
    assert seen[1]["path_params"] == {"thread_id": thread["thread_id"]} and seen[1]["query"] == {"limit": "5"}
    user, permissions, resource, action = users[0]
    assert (user.identity, user.display_name, user["tier"], "tier" in user) == (
        "carol",
        "Carol",
        "gold",
        True,
    )
    assert user.is_authenticated and permissions == ["p1"] and (resource, action) == ("threads", "create")
    assert users[1][2:] == ("threads", "search")
    assert thread["metadata"] == {"a": 1}


async def test_authentication_failures(serve_auth: Any, caplog: pytest.LogCaptureFixture) -> None:
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> Any:
        if authorization == "Bearer crash":
            raise RuntimeError(f"cannot parse {authorization}")
        if authorization == "Bearer weird":
            return 42
        if authorization == "Bearer forbidden":
            raise Auth.exceptions.HTTPException(
                status_code=403, detail="suspended", headers={"X-Why": "late"}
            )
        raise Auth.exceptions.HTTPException()

    as_user = serve_auth(auth)
    caplog.set_level(logging.DEBUG)
    missing = await as_user(None).post("/threads", json={})
    assert (missing.status_code, missing.json()) == (401, {"detail": "Unauthorized"})
    forbidden = await as_user("forbidden").post("/threads", json={})
    assert (forbidden.status_code, forbidden.json(), forbidden.headers["x-why"]) == (
        403,
        {"detail": "suspended"},
        "late",
    )
    crash = await as_user("crash").post("/threads", json={})
    assert crash.status_code == 401
    assert "RuntimeError" in caplog.text and "crash" not in caplog.text  # the type, never the message
    weird = await as_user("weird").post("/threads", json={})
    assert weird.status_code == 500
    assert (await as_user(None).get("/ok")).status_code == 200


async def test_auth_without_authenticate_is_anonymous(serve_auth: Any) -> None:
    auth = Auth()
    seen: list[Any] = []

    @auth.on
    async def record(ctx: Auth.types.AuthContext, value: Any) -> None:
        seen.append(ctx.user)

    client = serve_auth(auth)(None)
    assert (await client.post("/threads", json={})).status_code == 200
    assert seen[0].identity == "" and not seen[0].is_authenticated


def test_unknown_authenticate_parameter_is_refused() -> None:
    auth = Auth()

    @auth.authenticate
    async def authenticate(cookie: str) -> str:
        return cookie

    with pytest.raises(ValueError, match="cookie"):
        create_app(memory_manager(), api_runtime(), ApiSettings(custom_auth=auth))


# -- authorization ----------------------------------------------------------------------------------


async def test_false_denies_and_http_exceptions_pass_through(serve_auth: Any) -> None:
    auth = _token_auth({"a": "alice"})

    @auth.on.threads.create
    async def no_create(ctx: Auth.types.AuthContext, value: Any) -> bool:
        return False

    @auth.on.threads.search
    async def teapot(ctx: Auth.types.AuthContext, value: Any) -> None:
        raise Auth.exceptions.HTTPException(status_code=418, detail="no searching")

    @auth.on.threads.read
    async def broken(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return 7

    client = serve_auth(auth)("a")
    denied = await client.post("/threads", json={})
    assert (denied.status_code, denied.json()) == (403, {"detail": "Forbidden"})
    refused = await client.post("/threads/search", json={})
    assert (refused.status_code, refused.json()) == (418, {"detail": "no searching"})
    runs = await client.post("/runs/wait", json={"assistant_id": "echo", "input": {"x": 1}})
    assert runs.status_code == 200  # create_run falls back to no handler: allowed
    assert (await client.get("/threads/00000000-0000-4000-8000-000000000000")).status_code == 500


async def test_stamped_metadata_and_filters(serve_auth: Any, manager: RunManager) -> None:
    """The tutorial's owner pattern, plus a filter stricter than ownership (a same-owner thread
    without the stamp is hidden everywhere)."""
    auth = _token_auth({"a": {"identity": "alice"}, "b": {"identity": "bob"}})
    values: list[tuple[str, Any]] = []

    @auth.on
    async def owner(ctx: Auth.types.AuthContext, value: Any) -> Any:
        values.append((ctx.action, dict(value)))
        value.setdefault("metadata", {})["owner"] = ctx.user.identity
        return {"owner": ctx.user.identity}

    @auth.on.assistants
    async def shared(ctx: Auth.types.AuthContext, value: Any) -> None:
        return None

    as_user = serve_auth(auth)
    alice = as_user("a")
    thread = (await alice.post("/threads", json={"metadata": {"k": "v"}})).json()
    tid = thread["thread_id"]
    assert thread["metadata"] == {"k": "v", "owner": "alice"}
    run = (
        await alice.post(
            f"/threads/{tid}/runs", json={"assistant_id": "echo", "input": {"n": 1}, "metadata": {"r": 1}}
        )
    ).json()
    assert run["metadata"]["owner"] == "alice" and run["metadata"]["r"] == 1
    assert values[1] == (
        "create_run",
        {
            "thread_id": tid,
            "assistant_id": "echo",
            "run_id": None,
            "status": "pending",
            "metadata": {"r": 1, "owner": "alice"},
            "prevent_insert_if_inflight": True,
            "multitask_strategy": "enqueue",
            "if_not_exists": "reject",
            "after_seconds": None,
            "kwargs": {"input": {"n": 1}},
        },
    )
    batch = (
        await alice.post("/runs/batch", json=[{"assistant_id": "echo"}, {"assistant_id": "echo"}])
    ).json()
    assert all(r["metadata"]["owner"] == "alice" for r in batch)

    # A thread of alice's that lacks the stamp (made before auth was configured) is hidden.
    legacy = await manager.create_thread("alice", metadata={"k": "v"})
    hidden = legacy.thread_id
    for method, path, body in (
        ("GET", f"/threads/{hidden}", None),
        ("PATCH", f"/threads/{hidden}", {"metadata": {"x": 1}}),
        ("DELETE", f"/threads/{hidden}", None),
        ("GET", f"/threads/{hidden}/state", None),
        ("POST", f"/threads/{hidden}/history", {}),
        ("POST", f"/threads/{hidden}/copy", None),
        ("GET", f"/threads/{hidden}/runs", None),
        ("POST", f"/threads/{hidden}/runs/wait", {"assistant_id": "echo"}),
        ("POST", f"/threads/{hidden}/runs", {"assistant_id": "echo", "if_not_exists": "create"}),
    ):
        response = await alice.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": f"thread {hidden} not found"}
    assert (await manager.get_thread(hidden, "alice")).metadata == {"k": "v"}  # untouched
    again = await alice.post("/threads", json={"thread_id": hidden, "if_exists": "do_nothing"})
    assert again.status_code == 409  # not the hidden thread
    same = await alice.post("/threads", json={"thread_id": tid, "if_exists": "do_nothing"})
    assert same.status_code == 200 and same.json()["thread_id"] == tid
    # A read's body `metadata` (history: checkpoint metadata) is not the thread's: never stamped.
    await alice.get(f"/threads/{tid}/runs/{run['run_id']}/join")
    history = await alice.post(f"/threads/{tid}/history", json={"metadata": {"source": "loop"}})
    assert history.status_code == 200 and history.json()
    cancel = await alice.post("/runs/cancel", json={"thread_id": hidden, "run_ids": [run["run_id"]]})
    assert cancel.status_code == 404
    found = (await alice.post("/threads/search", json={"limit": 100})).json()
    assert hidden not in {t["thread_id"] for t in found} and tid in {t["thread_id"] for t in found}
    assert (await alice.post("/threads/count", json={})).json() == len(found)
    # The handler stamps the search's metadata too (as on LangGraph's server): asking for bob's
    # threads still finds only alice's own.
    asked = (await alice.post("/threads/search", json={"metadata": {"owner": "bob"}})).json()
    assert asked and {t["metadata"]["owner"] for t in asked} == {"alice"}

    # A run creating its thread stamps it first; bob cannot see any of it.
    created = await alice.post(
        "/threads/11111111-1111-4111-8111-111111111111/runs/wait",
        json={"assistant_id": "echo", "if_not_exists": "create"},
    )
    assert created.status_code == 200
    assert (await alice.get("/threads/11111111-1111-4111-8111-111111111111")).json()["metadata"][
        "owner"
    ] == "alice"
    bob = as_user("b")
    assert (await bob.get(f"/threads/{tid}")).status_code == 404
    assert (await bob.post("/threads/search", json={})).json() == []
    assert len((await bob.post("/assistants/search", json={})).json()) == 5


async def test_contains_filters_and_assistant_filters(serve_auth: Any, manager: RunManager) -> None:
    auth = _token_auth({"a": {"identity": "alice", "permissions": ["team:red"]}})

    @auth.on.threads
    async def teams(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return {"teams": {"$contains": "red"}, "org": "acme"}

    @auth.on.assistants
    async def only_echo(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return {"created_by": "system", "graph_id": "echo"}

    alice = serve_auth(auth)("a")
    red = await manager.create_thread("alice", metadata={"teams": ["red", "blue"], "org": "acme"})
    await manager.create_thread("alice", metadata={"teams": ["red"], "org": "other"})
    await manager.create_thread("alice", metadata={"teams": ["blue"], "org": "acme"})
    await manager.create_thread("alice", metadata={})
    found = (await alice.post("/threads/search", json={"limit": 10})).json()
    assert [t["thread_id"] for t in found] == [red.thread_id]
    assert (await alice.post("/threads/count", json={})).json() == 1
    assert (await alice.post("/threads/search", json={"offset": 1})).json() == []
    assert (await alice.get(f"/threads/{red.thread_id}")).status_code == 200
    # Asking for another org contradicts the filter: nothing, not a bypass.
    assert (await alice.post("/threads/search", json={"metadata": {"org": "other"}})).json() == []
    assert (await alice.post("/threads/count", json={"metadata": {"org": "other"}})).json() == 0
    # The graph's system assistants carry no `graph_id` metadata: the filter hides them all.
    assert (await alice.post("/assistants/search", json={})).json() == []
    assert (await alice.post("/assistants/count", json={})).json() == 0
    assert (await alice.get("/assistants/echo")).status_code == 404
    assert (await alice.get("/assistants/echo/schemas")).status_code == 404


async def test_unknown_filter_operators_fail_closed(serve_auth: Any) -> None:
    auth = _token_auth({"a": "alice"})

    @auth.on.threads
    async def weird(ctx: Auth.types.AuthContext, value: Any) -> Any:
        return {"owner": {"$ne": "bob"}}

    alice = serve_auth(auth)("a")
    assert (await alice.post("/threads/search", json={})).status_code == 500
    assert (await alice.post("/threads", json={})).status_code == 500
