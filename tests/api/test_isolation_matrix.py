"""Per-user isolation over HTTP, generated from the route table so that no route can escape it.

Two users authenticate with API keys. Alice owns a thread with a finished run (and checkpoints) and
a thread with a pending run. For every route taking a thread, run or checkpoint id, Bob calls it
with Alice's ids (and with his own thread and her run): the answer must be 404, exactly as for an
id that does not exist, never 200, 403 or 409, and Alice's resources must be unchanged afterwards.
Collection routes must never show Bob anything of Alice's. Every route of the app is classified; a
new one that is not fails `test_every_route_is_classified`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph.store.memory import InMemoryStore
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute

from runplane.api import ApiSettings, create_app, operators
from runplane.api import crons as c
from runplane.api import resource_schemas as rs
from runplane.api import schemas as s
from runplane.api.app import ENDPOINTS as API_ENDPOINTS
from runplane.api.app import SYSTEM
from runplane.api.protocols.thread_stream import ProtocolCommand
from runplane.api.routing import Endpoint
from runplane.core.manager import ManagerSettings, RunManager
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.runtime.items import LangGraphItems
from runplane.stores.memory import InMemoryStore as RunStore
from runplane.testing import memory_manager
from runplane.worker.scheduler import CroniterSchedule
from tests.api.conftest import api_runtime, api_worker

#: The LangGraph API and runplane's operator extensions (`/runplane/...`): isolated alike.
ENDPOINTS = (*API_ENDPOINTS, *operators.ENDPOINTS)

BASE_URL = "http://runplane.test"
KEYS = {"key-alice": "alice", "key-bob": "bob"}
ALICE = {"x-api-key": "key-alice"}
BOB = {"Authorization": "Bearer key-bob"}

#: Path parameters naming something a user owns (an assistant someone created is theirs; the
#: graphs' system assistants are everyone's, see `test_system_assistants_are_shared`).
OWNED_PARAMS = ("thread_id", "run_id", "checkpoint_id", "cron_id", "assistant_id")
#: Routes without an owned id that create, list or act on the caller's own things.
COLLECTION = frozenset(
    {
        ("POST", "/threads"),
        ("POST", "/threads/search"),
        ("POST", "/threads/count"),
        ("POST", "/runs/cancel"),
        ("POST", "/runs"),
        ("POST", "/runs/stream"),
        ("POST", "/runs/wait"),
        ("POST", "/runs/batch"),
        ("POST", "/runs/crons"),
        ("POST", "/runs/crons/search"),
        ("POST", "/runs/crons/count"),
        ("POST", "/assistants"),
        ("POST", "/assistants/search"),
        ("POST", "/assistants/count"),
        ("POST", "/threads/prune"),
        ("PUT", "/store/items"),
        ("GET", "/store/items"),
        ("DELETE", "/store/items"),
        ("POST", "/store/items/search"),
        ("POST", "/store/namespaces"),
        # MCP: assistants as tools; a call is a stateless run of the caller's own.
        ("POST", "/mcp"),
        ("GET", "/mcp"),
        ("DELETE", "/mcp"),
    }
)
#: Per-resource routes that never end by design (the thread stream follows the thread's future
#: runs): Bob's 404 is in the matrix; Alice's access is tested in `test_thread_lifecycle.py`.
ENDLESS = frozenset({("GET", "/threads/{thread_id}/stream")})
#: Thread streams that wait for their thread to exist (a client subscribes before its first run
#: creates it), so another user's thread streams nothing rather than 404: see
#: tests/e2e/test_thread_stream.py::test_another_users_thread_streams_nothing.
WAITING = frozenset(
    {("POST", "/threads/{thread_id}/stream/events"), ("WEBSOCKET", "/threads/{thread_id}/stream/events")}
)
#: Routes anyone may call.
PUBLIC = frozenset({("GET", "/ok"), ("GET", "/info"), ("GET", "/openapi.json"), ("GET", "/docs")})
#: The dashboard's static files: public, and holding no data (the page calls the API with a key).
DASHBOARD = frozenset({("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/{name}")})


def _params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def per_resource(endpoint: Endpoint) -> bool:
    return (endpoint.method, endpoint.path) not in WAITING and any(
        name in OWNED_PARAMS for name in _params(endpoint.path)
    )


def shared(endpoint: Endpoint) -> bool:
    """The queue's counts over every user (numbers only, no ids). System assistants are reached
    through the per-resource assistant routes, and their sharing has its own test."""
    return endpoint.path == "/runplane/queue"


def classify(method: str, path: str) -> list[str]:
    endpoint = next((e for e in ENDPOINTS if (e.method, e.path) == (method, path)), None)
    kinds = []
    if endpoint is not None and per_resource(endpoint):
        kinds.append("per-resource")
    if (method, path) in COLLECTION:
        kinds.append("collection")
    if endpoint is not None and shared(endpoint):
        kinds.append("shared")
    if (method, path) in PUBLIC | DASHBOARD:
        kinds.append("public")
    if (method, path) in WAITING:
        kinds.append("waiting")
    return kinds


# -- the world Alice builds ------------------------------------------------------------------------


@dataclass
class World:
    app: Starlette
    runtime: LangGraphRuntime
    alice: httpx.AsyncClient
    bob: httpx.AsyncClient
    thread_id: str
    run_id: str
    checkpoint_id: str
    pending_thread_id: str
    pending_run_id: str
    bob_thread_id: str
    cron_id: str
    assistant_id: str

    @property
    def ids(self) -> dict[str, str]:
        """Alice's ids for every owned path parameter (and a subgraph namespace)."""
        return {
            "thread_id": self.thread_id,
            "run_id": self.run_id,
            "checkpoint_id": self.checkpoint_id,
            "cron_id": self.cron_id,
            "assistant_id": self.assistant_id,
            "namespace": "x",
        }


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content.strip() else None


@pytest.fixture
async def world() -> AsyncIterator[World]:
    manager = RunManager(
        RunStore(),
        InMemoryBus(),
        settings=ManagerSettings(wait_fallback_seconds=0.2),
        schedule=CroniterSchedule(),
    )
    manager.attach_items(LangGraphItems(InMemoryStore()))
    runtime = api_runtime()
    worker = api_worker(manager, runtime)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.05, api_keys=KEYS))
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=ALICE) as alice,
        httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=BOB) as bob,
    ):
        thread = await _ok(await alice.post("/threads", json={"metadata": {"tag": "alice's"}}))
        thread_id = thread["thread_id"]
        await _ok(
            await alice.post(
                f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 1}}
            )
        )
        run_id = (await _ok(await alice.get(f"/threads/{thread_id}/runs")))[0]["run_id"]
        checkpoint_id = (await _ok(await alice.get(f"/threads/{thread_id}/state")))["checkpoint_id"]
        pending = await _ok(await alice.post("/threads", json={}))
        pending_run = await _ok(
            await alice.post(
                f"/threads/{pending['thread_id']}/runs", json={"assistant_id": "echo", "after_seconds": 3600}
            )
        )
        cron = await _ok(
            await alice.post(
                f"/threads/{thread_id}/runs/crons",
                json={"assistant_id": "echo", "schedule": "0 0 1 1 *", "metadata": {"tag": "alice's"}},
            )
        )
        assistant = await _ok(
            await alice.post(
                "/assistants", json={"graph_id": "echo", "name": "alice's", "config": {"tags": ["a"]}}
            )
        )
        await _ok(await alice.patch(f"/assistants/{assistant['assistant_id']}", json={"metadata": {"v": 2}}))
        bob_thread = await _ok(await bob.post("/threads", json={}))
        await _ok(
            await bob.post(
                f"/threads/{bob_thread['thread_id']}/runs/wait",
                json={"assistant_id": "echo", "input": {"n": 2}},
            )
        )
        try:
            yield World(
                app,
                runtime,
                alice,
                bob,
                thread_id,
                run_id,
                checkpoint_id,
                pending["thread_id"],
                pending_run["run_id"],
                bob_thread["thread_id"],
                cron["cron_id"],
                assistant["assistant_id"],
            )
        finally:
            await worker.stop()


async def snapshot(world: World) -> dict[str, Any]:
    """Everything Alice can observe about her resources."""
    saved = world.runtime.checkpointer.alist(None)  # every thread's
    seen: dict[str, Any] = {"checkpoints": sorted([str(c.config["configurable"]) async for c in saved])}
    for thread_id in (world.thread_id, world.pending_thread_id):
        seen[thread_id] = [
            await _ok(await world.alice.get(f"/threads/{thread_id}")),
            await _ok(await world.alice.get(f"/threads/{thread_id}/runs")),
            await _ok(await world.alice.get(f"/threads/{thread_id}/state")),
            await _ok(await world.alice.post(f"/threads/{thread_id}/history", json={})),
        ]
    seen["count"] = await _ok(await world.alice.post("/threads/count", json={}))
    seen["crons"] = await _ok(await world.alice.post("/runs/crons/search", json={}))
    seen["assistant"] = [
        await _ok(await world.alice.get(f"/assistants/{world.assistant_id}")),
        await _ok(await world.alice.post(f"/assistants/{world.assistant_id}/versions", json={})),
        await _ok(await world.alice.post("/assistants/search", json={"limit": 100})),
    ]
    return seen


# -- the matrix ------------------------------------------------------------------------------------

#: A body that passes validation, per body model, so each request reaches the ownership check.
SAMPLES: dict[Any, list[dict[str, Any]]] = {
    s.RunCreateStateful: [
        {"assistant_id": "echo", "input": {"pwned": True}},
        {"assistant_id": "echo", "if_not_exists": "create", "multitask_strategy": "rollback"},
        {"assistant_id": "echo", "multitask_strategy": "interrupt", "stream_resumable": True},
    ],
    s.ThreadPatch: [{"metadata": {"pwned": True}}],
    s.ThreadStateUpdate: [{"values": {"pwned": True}}, {"values": {"pwned": True}, "as_node": "echo"}],
    s.ThreadStateCheckpoint: [{"checkpoint": {"checkpoint_id": "{checkpoint_id}"}}],
    s.ThreadHistory: [{"limit": 5}, {"limit": 5, "before": "{checkpoint_id}"}],
    c.ThreadCronCreate: [{"assistant_id": "echo", "schedule": "* * * * *", "input": {"pwned": True}}],
    c.CronPatch: [{"enabled": False}, {"schedule": "* * * * *", "metadata": {"pwned": True}}],
    rs.AssistantPatch: [{"metadata": {"pwned": True}}, {"name": "pwned", "config": {"tags": ["x"]}}],
    rs.AssistantLatest: [{"version": 1}],
    rs.AssistantVersions: [{}, {"metadata": {"v": 2}}],
    # `run.start` on a foreign thread: tests/e2e/test_thread_stream.py (on an unknown one it creates it).
    ProtocolCommand: [
        {"id": 1, "method": "input.respond", "params": {"interrupt_id": "x", "response": "pwned"}},
        {"id": 2, "method": "agent.getTree", "params": {}},
    ],
}
#: Query variants worth trying, per route.
QUERIES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"): [
        {},
        {"wait": "true", "action": "rollback"},
        {"action": "interrupt", "wait": "1"},
    ],
    ("GET", "/threads/{thread_id}/runs/{run_id}/join"): [{}, {"cancel_on_disconnect": "true"}],
    ("GET", "/threads/{thread_id}/runs/{run_id}/stream"): [{}, {"cancel_on_disconnect": "true"}],
    ("DELETE", "/assistants/{assistant_id}"): [{}, {"delete_threads": "true"}],
}


@dataclass(frozen=True)
class Case:
    endpoint: Endpoint
    body: dict[str, Any] | None
    query: dict[str, str]
    #: "foreign": all of Alice's ids; "mixed": Bob's thread with Alice's run.
    ids: str

    @property
    def name(self) -> str:
        extra = f" body={self.body}" if self.body else ""
        extra += f" query={self.query}" if self.query else ""
        return f"{self.endpoint.method} {self.endpoint.path} [{self.ids}]{extra}"


def _cases() -> list[Case]:
    cases = []
    for endpoint in ENDPOINTS:
        if not per_resource(endpoint):
            continue
        if endpoint.body is None:
            bodies: list[dict[str, Any] | None] = [None]
        elif endpoint.body in SAMPLES:
            bodies = list(SAMPLES[endpoint.body])
        else:
            assert endpoint.body_optional, f"add a sample body for {endpoint.method} {endpoint.path}"
            bodies = [{}]
        queries = QUERIES.get((endpoint.method, endpoint.path), [{}])
        id_kinds = ["foreign", "mixed"] if "run_id" in _params(endpoint.path) else ["foreign"]
        for body in bodies:
            for query in queries:
                for ids in id_kinds:
                    cases.append(Case(endpoint, body, query, ids))
    return cases


CASES = _cases()


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids) if "{" in template else template
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    return template


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_foreign_ids_are_not_found(world: World, case: Case) -> None:
    ids = world.ids
    if case.ids == "mixed":
        ids["thread_id"] = world.bob_thread_id
    before = await snapshot(world)
    path = case.endpoint.path.format(**ids) if _params(case.endpoint.path) else case.endpoint.path
    response = await world.bob.request(
        case.endpoint.method,
        path,
        params=case.query,
        json=_fill(case.body, ids) if case.body is not None else None,
    )
    assert response.status_code == 404, (case.name, response.status_code, response.text)
    assert "detail" in response.json()
    assert await snapshot(world) == before
    if (case.body or {}).get("if_not_exists") == "create":
        return  # an id nobody owns is created, as asked
    # Exactly what an id nobody owns gets: the answer tells Bob nothing about Alice.
    unknown = {
        k: (v if k == "thread_id" and case.ids == "mixed" else str(uuid.uuid4())) for k, v in ids.items()
    }
    path = case.endpoint.path.format(**unknown)
    nobody = await world.bob.request(
        case.endpoint.method,
        path,
        params=case.query,
        json=_fill(case.body, unknown) if case.body is not None else None,
    )
    assert nobody.status_code == 404, nobody.text
    assert _masked(response.json()["detail"], ids) == _masked(nobody.json()["detail"], unknown)


def _masked(detail: str, ids: dict[str, str]) -> str:
    for value in ids.values():
        detail = detail.replace(value, "<id>")
    return detail


async def test_alice_still_reaches_everything(world: World) -> None:
    """The matrix's 404s are about the caller: the same requests as Alice succeed."""
    ids = world.ids
    for endpoint in ENDPOINTS:
        if (
            not per_resource(endpoint)
            or (endpoint.method, endpoint.path) in ENDLESS
            or endpoint.method in ("DELETE", "PATCH")
            or endpoint.path.endswith("/cancel")
        ):
            continue
        body = None
        if endpoint.body is not None:
            body = _fill(SAMPLES.get(endpoint.body, [{}])[0], ids)
            if endpoint.body in (s.RunCreateStateful, s.ThreadStateUpdate, c.ThreadCronCreate):
                continue  # would change her thread; creating runs is covered elsewhere
        response = await world.alice.request(endpoint.method, endpoint.path.format(**ids), json=body)
        assert response.status_code == 200, (endpoint.method, endpoint.path, response.text)


async def test_collections_never_show_foreign_items(world: World) -> None:
    bob, alice = world.bob, world.alice
    before = await snapshot(world)
    alice_threads = {world.thread_id, world.pending_thread_id}
    body: dict[str, Any]
    for body in (
        {},
        {"ids": sorted(alice_threads)},
        {"metadata": {"tag": "alice's"}},
        {"status": "busy"},
        {"limit": 1000, "sort_by": "created_at", "sort_order": "asc"},
        {"values": {"n": 1}},
    ):
        found = await _ok(await bob.post("/threads/search", json=body))
        assert not alice_threads & {t["thread_id"] for t in found}, body
        count_body = {k: v for k, v in body.items() if k in ("metadata", "status", "values")}
        countable = await _ok(await bob.post("/threads/search", json={**count_body, "limit": 1000}))
        assert await _ok(await bob.post("/threads/count", json=count_body)) == len(countable)
    assert [t["thread_id"] for t in await _ok(await bob.post("/threads/search", json={}))] == [
        world.bob_thread_id
    ]

    # Bulk cancel: by Alice's ids, or by status, nothing of hers is touched.
    for body in (
        {"thread_id": world.pending_thread_id, "run_ids": [world.pending_run_id]},
        {"status": "all"},
        {"status": "pending", "thread_id": world.pending_thread_id},
    ):
        response = await bob.post("/runs/cancel", json=body, params={"action": "rollback"})
        assert response.status_code == 404, (body, response.text)

    # Crons: searching and counting show Bob only his own.
    for body in ({}, {"thread_id": world.thread_id}, {"metadata": {"tag": "alice's"}}, {"limit": 1000}):
        assert await _ok(await bob.post("/runs/crons/search", json=body)) == [], body
        count_body = {k: v for k, v in body.items() if k != "limit"}
        assert await _ok(await bob.post("/runs/crons/count", json=count_body)) == 0, body
    bobs = await _ok(await bob.post("/runs/crons", json={"assistant_id": "echo", "schedule": "0 0 1 1 *"}))
    assert bobs["thread_id"] is None
    assert [x["cron_id"] for x in await _ok(await bob.post("/runs/crons/search", json={}))] == [
        bobs["cron_id"]
    ]
    await _ok(await bob.delete(f"/runs/crons/{bobs['cron_id']}"))

    # Stateless runs and thread creation make Bob's own things, never touch Alice's.
    for path in ("/runs", "/runs/wait", "/runs/stream"):
        assert (await bob.post(path, json={"assistant_id": "echo", "input": {"x": 1}})).status_code == 200
    batch = await bob.post("/runs/batch", json=[{"assistant_id": "echo"}, {"assistant_id": "ticker"}])
    assert batch.status_code == 200
    assert all(r["thread_id"] not in alice_threads for r in batch.json())
    # Pruning Alice's threads prunes nothing (her ids are unknown to Bob).
    for strategy in ("delete", "keep_latest"):
        pruned = await _ok(
            await bob.post("/threads/prune", json={"thread_ids": sorted(alice_threads), "strategy": strategy})
        )
        assert pruned == {"pruned_count": 0}
    # Thread ids are global: taking Alice's id is a conflict (never her thread, never a 200).
    for if_exists in ("raise", "do_nothing"):
        taken = await bob.post("/threads", json={"thread_id": world.thread_id, "if_exists": if_exists})
        assert taken.status_code == 409, taken.text
        assert "alice" not in taken.text and world.thread_id not in str(taken.headers)
    assert await snapshot(world) == before
    assert (await alice.get(f"/threads/{world.pending_thread_id}/runs/{world.pending_run_id}")).json()[
        "status"
    ] == "pending"


async def test_system_assistants_are_shared(world: World) -> None:
    """The graphs' own assistants are everyone's to read and run; a named user cannot change what
    the others run (409), and Alice's own assistant shows in no one else's search or count."""
    system = {"echo", "failer", "asker", "sleepy", "ticker"}
    for client in (world.alice, world.bob):
        found = await _ok(await client.post("/assistants/search", json={"limit": 100}))
        names = {a["graph_id"] for a in found if a["metadata"].get("created_by") == "system"}
        assert names == system
        assert (await client.get("/assistants/echo/graph")).status_code == 200
        assert (await client.patch("/assistants/echo", json={"name": "mine"})).status_code == 409
        assert (await client.delete("/assistants/echo")).status_code == 409
    before = await snapshot(world)
    bob_sees = await _ok(await world.bob.post("/assistants/search", json={"limit": 100}))
    assert world.assistant_id not in {a["assistant_id"] for a in bob_sees}
    assert await _ok(await world.bob.post("/assistants/count", json={})) == len(system)
    assert await _ok(await world.alice.post("/assistants/count", json={})) == len(system) + 1
    # Bob cannot take Alice's id, nor run her assistant.
    taken = await world.bob.post(
        "/assistants",
        json={"graph_id": "echo", "assistant_id": world.assistant_id, "if_exists": "do_nothing"},
    )
    assert taken.status_code == 409 and "alice" not in taken.text
    run = await world.bob.post(
        f"/threads/{world.bob_thread_id}/runs", json={"assistant_id": world.assistant_id}
    )
    assert run.status_code == 404, run.text
    assert await snapshot(world) == before


async def test_unauthenticated_callers_get_nothing(world: World) -> None:
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as anonymous:
        for endpoint in ENDPOINTS:
            path = endpoint.path.format(**world.ids)
            response = await anonymous.request(
                endpoint.method, path, json={} if endpoint.body is not None else None
            )
            assert response.status_code == 401, (endpoint.method, endpoint.path, response.text)
        for method, path in PUBLIC:
            assert (await anonymous.request(method, path)).status_code == 200, path
        for path in ("/ui/", "/ui/app.js", "/ui/app.css"):
            assert (await anonymous.get(path)).status_code == 200, path
        assert (await anonymous.get("/metrics")).status_code == 401


def _app_routes(app: Starlette) -> set[tuple[str, str]]:
    routes = set()
    for route in app.routes:
        assert isinstance(route, Route | WebSocketRoute)
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)
        if isinstance(route, WebSocketRoute):
            routes.add(("WEBSOCKET", path))
            continue
        routes.update((method, path) for method in route.methods or () if method != "HEAD")
    return routes


def test_every_route_is_classified() -> None:
    app = create_app(memory_manager(), api_runtime(), ApiSettings(api_keys=KEYS))
    routes = _app_routes(app)
    # The app serves exactly the route table (plus the API description), nothing on the side.
    assert routes == {(e.method, e.path) for e in (*ENDPOINTS, *SYSTEM)} | DASHBOARD | {
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("WEBSOCKET", "/threads/{thread_id}/stream/events"),
    }
    unclassified = {route: classify(*route) for route in routes if len(classify(*route)) != 1}
    assert not unclassified, (
        f"classify each route exactly once (per-resource, collection, shared, public): {unclassified}"
    )
    assert COLLECTION <= routes and PUBLIC <= routes and WAITING <= routes  # no stale entries
    kinds = [classify(*route)[0] for route in routes]
    print(
        f"\nisolation matrix: {len(routes)} routes = "
        + ", ".join(
            f"{kinds.count(k)} {k}" for k in ("per-resource", "collection", "shared", "public", "waiting")
        )
        + f"; {len(CASES)} foreign-id cases"
    )
    assert kinds.count("per-resource") >= 19


async def test_store_items_live_under_each_users_own_root(world: World) -> None:
    """With API keys each user's long-term store items live under their own namespace root: the
    same namespace and key are two items, invisible to each other in get, search and namespaces."""
    alice, bob = world.alice, world.bob
    put = {"namespace": ["memories", "prefs"], "key": "k", "value": {"by": "alice"}}
    assert (await alice.put("/store/items", json=put)).status_code == 204
    params = {"namespace": "memories.prefs", "key": "k"}
    assert (await bob.get("/store/items", params=params)).json() is None
    assert (await _ok(await bob.post("/store/items/search", json={}))) == {"items": []}
    assert (await _ok(await bob.post("/store/namespaces", json={}))) == {"namespaces": []}
    assert (
        await bob.request("DELETE", "/store/items", json={"namespace": ["memories", "prefs"], "key": "k"})
    ).status_code == 204
    assert (await bob.put("/store/items", json={**put, "value": {"by": "bob"}})).status_code == 204
    mine = await _ok(await alice.get("/store/items", params=params))
    assert mine["value"] == {"by": "alice"} and mine["namespace"] == ["memories", "prefs"]
    assert (await _ok(await bob.get("/store/items", params=params)))["value"] == {"by": "bob"}
    found = await _ok(await alice.post("/store/items/search", json={"namespace_prefix": ["memories"]}))
    assert [(i["namespace"], i["value"]) for i in found["items"]] == [
        (["memories", "prefs"], {"by": "alice"})
    ]
    assert await _ok(await alice.post("/store/namespaces", json={"max_depth": 1})) == {
        "namespaces": [["memories"]]
    }
