"""Assistants, health, info, and `/openapi.json` agreeing with the routes the server really has."""

from __future__ import annotations

import uuid

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from runplane.api.sse import encode_event, mode_filter
from runplane.core.graphs import default_assistant_id
from runplane.core.stream_modes import StreamModes


async def test_ok_and_info(client: httpx.AsyncClient) -> None:
    assert (await client.get("/ok")).json() == {"ok": True, "services": {}}
    assert (await client.get("/ok", params={"check_db": 1})).status_code == 200
    info = (await client.get("/info")).json()
    assert info["version"] and info["flags"]["assistants"] is True


async def test_assistants_search_count_get(client: httpx.AsyncClient) -> None:
    found = await client.post("/assistants/search", json={"limit": 2, "offset": 0})
    assert found.status_code == 200
    assert len(found.json()) == 2
    assert found.headers["x-pagination-total"] == "5" and found.headers["x-pagination-next"] == "2"
    last = await client.post("/assistants/search", json={"limit": 2, "offset": 4})
    assert "x-pagination-next" not in last.headers

    everything = (await client.post("/assistants/search", json={})).json()
    created = [a["created_at"] for a in everything]
    assert created == sorted(created, reverse=True)  # newest first by default
    names = await client.post(
        "/assistants/search", json={"sort_by": "name", "sort_order": "asc", "select": ["name"]}
    )
    assert names.json() == [{"name": n} for n in sorted(["echo", "failer", "asker", "sleepy", "ticker"])]
    by_graph = (await client.post("/assistants/search", json={"graph_id": "echo"})).json()
    assert [a["assistant_id"] for a in by_graph] == [default_assistant_id("echo")]
    assert (await client.post("/assistants/search", json={"metadata": {"created_by": "user"}})).json() == []

    assert (await client.post("/assistants/count", json={})).json() == 5
    assert (await client.post("/assistants/count", json={"name": "ECH"})).json() == 1

    by_id = (await client.get(f"/assistants/{default_assistant_id('echo')}")).json()
    by_name = (await client.get("/assistants/echo")).json()
    assert by_id == by_name
    assert by_id["graph_id"] == "echo" and by_id["version"] == 1 and by_id["description"] is None
    assert (await client.get(f"/assistants/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/assistants/nope")).status_code == 404


async def test_assistant_graph_schemas_subgraphs(client: httpx.AsyncClient) -> None:
    graph = await client.get("/assistants/echo/graph", params={"xray": "false"})
    assert {n["id"] for n in graph.json()["nodes"]} == {"__start__", "echo", "__end__"}
    assert (await client.get("/assistants/echo/graph", params={"xray": 2})).status_code == 200
    assert (await client.get("/assistants/echo/graph", params={"xray": "lots"})).status_code == 422
    schemas = (await client.get(f"/assistants/{default_assistant_id('echo')}/schemas")).json()
    assert schemas["graph_id"] == "echo" and "state_schema" in schemas
    assert (await client.get("/assistants/echo/subgraphs", params={"recurse": "true"})).json() == {}
    assert (await client.get("/assistants/echo/subgraphs/child")).json() == {}
    assert (await client.get(f"/assistants/{uuid.uuid4()}/schemas")).status_code == 404


async def test_openapi_documents_exactly_the_routes(app: Starlette, client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}
    served = {
        (route.path.replace(":runplane_uuid", "").replace(":runplane_assistant", ""), method)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
    dashboard = {("/ui", "GET"), ("/ui/", "GET"), ("/ui/{name}", "GET")}  # static files, not API
    assert documented == served - {("/openapi.json", "GET"), ("/docs", "GET")} - dashboard
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))

    run_create = document["paths"]["/threads/{thread_id}/runs"]["post"]
    assert run_create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunCreateStateful"
    }
    assert {"404", "409", "413", "422"} <= set(run_create["responses"])
    schema = document["components"]["schemas"]["RunCreateStateful"]
    assert schema["required"] == ["assistant_id"]
    modes = schema["properties"]["stream_mode"]["anyOf"][0]["enum"]
    assert "messages-tuple" in modes and "bogus" not in modes
    join_stream = document["paths"]["/threads/{thread_id}/runs/{run_id}/stream"]["get"]
    params = {(p["in"], p["name"]) for p in join_stream["parameters"]}
    assert params == {
        ("path", "thread_id"),
        ("path", "run_id"),
        ("query", "cancel_on_disconnect"),
        ("query", "stream_mode"),
        ("header", "Last-Event-ID"),
    }
    for path, ops in document["paths"].items():
        for op in ops.values():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert f"{{{param['name']}}}" in path
    assert (await client.get("/docs")).headers["content-type"].startswith("text/html")


async def test_responses_match_their_documented_models(client: httpx.AsyncClient) -> None:
    from runplane.api import schemas as s

    thread = (await client.post("/threads", json={})).json()
    s.ThreadOut.model_validate(thread)
    run = (await client.post(f"/threads/{thread['thread_id']}/runs", json={"assistant_id": "echo"})).json()
    s.RunOut.model_validate(run)
    s.AssistantOut.model_validate((await client.get("/assistants/echo")).json())
    s.ThreadStateOut.model_validate((await client.get(f"/threads/{thread['thread_id']}/state")).json())
    s.GraphSchemaOut.model_validate((await client.get("/assistants/echo/schemas")).json())


def test_sse_encoding() -> None:
    assert encode_event("values", b'{"a":1}') == b'event: values\ndata: {"a":1}\n\n'
    assert encode_event("custom", b"1", "7") == b"event: custom\ndata: 1\nid: 7\n\n"
    assert encode_event("custom", b'{\n"a": 1}') == b'event: custom\ndata: {\ndata: "a": 1}\n\n'
    accept = mode_filter(StreamModes.parse(["messages", "custom", "messages-tuple"]))
    assert accept is not None
    assert accept("messages/partial") and accept("messages") and accept("custom|child:1") and accept("error")
    assert not accept("values") and not accept("metadata")
    assert mode_filter(None) is None
