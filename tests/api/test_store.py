"""`/store/*` over HTTP, on the real LangGraph `InMemoryStore` through the real adapter."""

from __future__ import annotations

import httpx
import pytest
from langgraph.store.memory import InMemoryStore

from runplane.api import ApiSettings, create_app
from runplane.runtime.items import LangGraphItems
from runplane.testing import FakeClock, memory_manager
from tests.api.conftest import BASE_URL, api_runtime


async def test_put_get_search_namespaces_delete(client: httpx.AsyncClient) -> None:
    for key, n in (("a", 1), ("b", 2)):
        put = {"namespace": ["users", "u1", "prefs"], "key": key, "value": {"n": n, "tag": "x"}}
        assert (await client.put("/store/items", json=put)).status_code == 204
    await client.put("/store/items", json={"namespace": ["users", "u2"], "key": "c", "value": {"n": 3}})
    item = (await client.get("/store/items", params={"namespace": "users.u1.prefs", "key": "a"})).json()
    assert (
        item["namespace"] == ["users", "u1", "prefs"]
        and item["key"] == "a"
        and item["value"] == {"n": 1, "tag": "x"}
    )
    assert item["created_at"] and item["updated_at"]
    missing = await client.get("/store/items", params={"namespace": "users.u1.prefs", "key": "nope"})
    assert missing.status_code == 200 and missing.json() is None  # as the reference server answers
    found = (
        await client.post("/store/items/search", json={"namespace_prefix": ["users"], "filter": {"n": 2}})
    ).json()
    assert [(i["key"], i["score"]) for i in found["items"]] == [("b", None)]
    page = (
        await client.post(
            "/store/items/search", json={"namespace_prefix": ["users"], "limit": 1, "offset": 1}
        )
    ).json()
    assert len(page["items"]) == 1
    namespaces = (await client.post("/store/namespaces", json={"prefix": ["users"], "max_depth": 2})).json()
    assert namespaces == {"namespaces": [["users", "u1"], ["users", "u2"]]}
    suffix = (await client.post("/store/namespaces", json={"suffix": ["prefs"]})).json()
    assert suffix == {"namespaces": [["users", "u1", "prefs"]]}
    gone = {"namespace": ["users", "u1", "prefs"], "key": "a"}
    assert (await client.request("DELETE", "/store/items", json=gone)).status_code == 204
    assert (
        await client.get("/store/items", params={"namespace": "users.u1.prefs", "key": "a"})
    ).json() is None


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/store/items", {"json": {"namespace": ["a.b"], "key": "k", "value": {}}}),
        ("PUT", "/store/items", {"json": {"namespace": ["a", ""], "key": "k", "value": {}}}),
        ("PUT", "/store/items", {"json": {"namespace": [], "key": "k", "value": {}}}),
        ("PUT", "/store/items", {"json": {"namespace": ["langgraph"], "key": "k", "value": {}}}),
        ("PUT", "/store/items", {"json": {"namespace": ["a"], "key": "k", "value": [1]}}),
        ("PUT", "/store/items", {"json": {"namespace": ["a"], "key": "k", "value": {}, "ttl": -1}}),
        ("GET", "/store/items", {"params": {"namespace": "a..b", "key": "k"}}),
        ("GET", "/store/items", {"params": {"namespace": "a"}}),
        ("POST", "/store/items/search", {"json": {"namespace_prefix": ["x.y"]}}),
        ("POST", "/store/namespaces", {"json": {"prefix": [""]}}),
        ("DELETE", "/store/items", {"json": {"namespace": ["a."], "key": "k"}}),
    ],
)
async def test_bad_namespaces_and_values_are_refused(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    listed = (await client.post("/store/namespaces", json={})).json()
    assert listed == {"namespaces": []}  # nothing was written


async def test_ttl_expires_and_reads_refresh_it() -> None:
    """`InMemoryStore` has no TTLs: the adapter keeps them (on the injected clock) and the sweep
    deletes what ran out; a read restarts the TTL (LangGraph's `refresh_on_read`)."""
    clock = FakeClock()
    manager = memory_manager(clock=clock)
    graph_store = InMemoryStore()
    manager.attach_items(LangGraphItems(graph_store, clock=clock))
    app = create_app(manager, api_runtime(), ApiSettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        await client.put(
            "/store/items", json={"namespace": ["m"], "key": "short", "value": {"v": 1}, "ttl": 1}
        )
        await client.put("/store/items", json={"namespace": ["m"], "key": "kept", "value": {"v": 2}})
        clock.advance(50)
        read = await client.get("/store/items", params={"namespace": "m", "key": "short"})
        assert read.json()["value"] == {"v": 1}  # and its TTL restarts now
        clock.advance(50)
        assert await manager.sweep_items() == 0
        no_refresh = {"namespace": "m", "key": "short", "refresh_ttl": "false"}
        assert (await client.get("/store/items", params=no_refresh)).json()["value"] == {"v": 1}
        clock.advance(11)
        assert await manager.sweep_items() == 1
        assert await graph_store.aget(("m",), "short") is None  # gone from the graphs' store too
        assert (await client.get("/store/items", params={"namespace": "m", "key": "short"})).json() is None
        assert (await client.get("/store/items", params={"namespace": "m", "key": "kept"})).json()[
            "value"
        ] == {"v": 2}
