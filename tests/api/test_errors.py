"""Client mistakes get a 4xx JSON body naming the problem, never a 500; the server keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from runplane.api.errors import STATUS_BY_ERROR, status_for
from runplane.core.errors import (
    CancelRequested,
    Conflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    RunplaneError,
    StoreUnavailable,
    ThreadBusy,
)


async def _thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/threads", json={})).json()["thread_id"])


def test_error_table() -> None:
    assert status_for(NotFound()) == 404
    assert status_for(ThreadBusy()) == 409
    assert status_for(Conflict()) == 409
    assert status_for(InvalidInput()) == 422
    assert status_for(InvalidTransition()) == 409
    assert status_for(LeaseLost()) == 409
    assert status_for(CancelRequested("interrupt")) == 409
    assert status_for(StoreUnavailable()) == 503
    assert status_for(RunplaneError()) == 500
    assert set(STATUS_BY_ERROR) == {c for c in RunplaneError.__subclasses__()}


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    for path in ("/threads", "/threads/search", "/runs/wait", "/assistants/search"):
        response = await client.post(path, content=b"{not json", headers={"content-type": "application/json"})
        assert response.status_code == 422, path
        assert response.json() == {"detail": "Invalid JSON in request body"}


async def test_body_must_be_an_object(client: httpx.AsyncClient) -> None:
    for body in (b"[]", b'"x"', b"null", b"1"):
        response = await client.post("/threads", content=body)
        assert response.status_code == 422, body


async def test_oversize_body_is_413(client: httpx.AsyncClient) -> None:
    big = b'{"metadata": {"x": "' + b"a" * (70 * 1024) + b'"}}'
    response = await client.post("/threads", content=big)
    assert response.status_code == 413
    assert "exceeds" in response.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"metadata": {"x": "'
        for _ in range(70):
            yield b"a" * 1024
        yield b'"}}'

    streamed = await client.post("/threads", content=chunks())
    assert streamed.status_code == 413
    assert (await client.get("/ok")).status_code == 200


async def test_bad_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/threads", content=b"{}", headers={"content-length": "nope"})
    assert response.status_code == 400


async def test_validation_errors_name_the_field(client: httpx.AsyncClient) -> None:
    thread_id = await _thread(client)
    url = f"/threads/{thread_id}/runs"
    cases = [
        ({"input": {}}, "assistant_id"),
        ({"assistant_id": "echo", "stream_mode": "bogus"}, "stream_mode"),
        ({"assistant_id": "echo", "stream_mode": ["values", "bogus"]}, "stream_mode"),
        ({"assistant_id": "echo", "multitask_strategy": "bogus"}, "multitask_strategy"),
        ({"assistant_id": "echo", "if_not_exists": "maybe"}, "if_not_exists"),
        ({"assistant_id": "echo", "after_seconds": -1}, "after_seconds"),
        ({"assistant_id": "echo", "after_seconds": 1e300}, "after_seconds"),
        ({"assistant_id": "echo", "stream_resumable": "yes"}, "stream_resumable"),
        ({"assistant_id": "echo", "config": {"recursion_limit": "5"}}, "recursion_limit"),
        ({"assistant_id": "echo", "interrupt_before": "echo"}, "interrupt_before"),
        ({"assistant_id": "echo", "durability": "forever"}, "durability"),
        ({"assistant_id": "echo", "command": {"goto": 5}}, "goto"),
        ({"assistant_id": 5}, "assistant_id"),
    ]
    for body, field in cases:
        response = await client.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, str) and field in detail, (body, detail)
        assert any(field in ".".join(map(str, e["loc"])) for e in response.json()["errors"])
    both = await client.post(url, json={"assistant_id": "echo", "input": {"a": 1}, "command": {"resume": 1}})
    assert both.status_code == 422 and "mutually exclusive" in both.json()["detail"]
    configurable_and_context = await client.post(
        url, json={"assistant_id": "echo", "config": {"configurable": {"a": 1}}, "context": {"a": 1}}
    )
    assert configurable_and_context.status_code == 400


async def test_search_validation(client: httpx.AsyncClient) -> None:
    body: dict[str, Any]
    for body in (
        {"limit": "abc"},
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"status": "sleeping"},
        {"sort_by": "nope"},
        {"ids": ["not-a-uuid"]},
        {"select": ["secret"]},
        {"metadata": []},
        {"limit": 2.5},
        {"limit": True},
    ):
        response = await client.post("/threads/search", json=body)
        assert response.status_code == 422, body


async def test_whole_floats_are_integers(client: httpx.AsyncClient) -> None:
    """JSON Schema counts `10.0` as an integer, so the server does too."""
    response = await client.post("/threads/search", content=b'{"limit": 10.0, "offset": 0.0}')
    assert response.status_code == 200


async def test_query_validation(client: httpx.AsyncClient) -> None:
    thread_id = await _thread(client)
    for params in (
        {"limit": "abc"},
        {"limit": "0"},
        {"offset": "-1"},
        {"status": "bogus"},
        {"select": "secret"},
    ):
        response = await client.get(f"/threads/{thread_id}/runs", params=params)
        assert response.status_code == 422, params
        assert response.json()["errors"][0]["loc"][0] == "query"
    run_id = uuid.uuid4()
    response = await client.post(f"/threads/{thread_id}/runs/{run_id}/cancel", params={"action": "explode"})
    assert response.status_code == 422
    response = await client.post(f"/threads/{thread_id}/runs/{run_id}/cancel", params={"wait": "maybe"})
    assert response.status_code == 422


async def test_ids_must_be_uuids(client: httpx.AsyncClient) -> None:
    response = await client.get("/threads/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["detail"] == "Invalid thread ID: must be a UUID"
    thread_id = await _thread(client)
    response = await client.get(f"/threads/{thread_id}/runs/also-not")
    assert response.json()["detail"] == "Invalid run ID: must be a UUID"
    created = await client.post("/threads", json={"thread_id": "abc"})
    assert created.status_code == 422
    assert (await client.get(f"/threads/{thread_id.upper()}")).json()["thread_id"] == thread_id
    nested = await client.post(f"/threads/{thread_id}/runs/x/cancel")
    assert nested.json()["detail"] == "Invalid run ID: must be a UUID"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong = await client.put("/threads")
    assert wrong.status_code == 405 and "detail" in wrong.json()
    assert "POST" in wrong.headers["allow"]
    thread_id = await _thread(client)
    # Every method of a path is listed, and a fixed segment never reads as a bad id.
    options = await client.options(f"/threads/{thread_id}")
    assert options.status_code == 405
    assert set(options.headers["allow"].split(", ")) >= {"GET", "PATCH", "DELETE"}
    for method, path in [
        ("GET", f"/threads/{thread_id}/runs/stream"),
        ("GET", f"/threads/{thread_id}/runs/wait"),
        ("PATCH", "/threads/search"),
        ("PUT", "/threads/not-a-uuid"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 405, (method, path, response.text)
        assert response.json() == {"detail": "Method Not Allowed"}


async def test_unexpected_errors_are_500_json(client: httpx.AsyncClient, runtime, caplog) -> None:
    async def broken(graph_id: str, *, xray: bool | int = False) -> dict[str, Any]:
        raise RuntimeError("bug")

    runtime.graph_drawable = broken
    with caplog.at_level("ERROR"):
        response = await client.get("/assistants/echo/graph")
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json() == {"detail": "Internal Server Error", "request_id": request_id}
    # Logged here, with the traceback and the id the client was given.
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert logged and logged[0].exc_info is not None and "bug" in str(logged[0].exc_info[1])
    assert (await client.get("/ok")).status_code == 200


async def test_core_errors_map_through_the_table(client: httpx.AsyncClient, manager) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise Conflict("dup")

    manager.store.get_thread = failing
    response = await client.get(f"/threads/{uuid.uuid4()}")
    assert response.status_code == status_for(Conflict("dup")) == 409
    assert response.json() == {"detail": "dup"}


async def test_an_unavailable_store_is_a_generic_503_with_retry_after(
    client: httpx.AsyncClient, manager, caplog
) -> None:
    secret = "connection to server at 10.1.2.3, port 5432 failed: role alice"

    async def failing(*args: object, **kwargs: object) -> None:
        try:
            raise OSError(secret)
        except OSError as exc:
            raise StoreUnavailable(f"PostgreSQL failed: {exc}") from exc

    manager.store.get_thread = failing
    with caplog.at_level("WARNING"):
        response = await client.get(f"/threads/{uuid.uuid4()}")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body == {
        "detail": "Service Unavailable: a dependency is down, retry later",
        "request_id": response.headers["x-request-id"],
    }
    assert "10.1.2.3" not in response.text and "alice" not in response.text
    # The operator's log has the cause, under the request id.
    assert any(body["request_id"] in r.getMessage() and secret in r.getMessage() for r in caplog.records)
    # Liveness stays up; readiness reports the database.
    assert (await client.get("/ok")).json() == {"ok": True, "services": {}}
    ready = await client.get("/ok", params={"check_db": 1})
    assert ready.status_code == 500
    assert ready.json() == {"ok": False, "services": {"database": "unhealthy"}}


async def test_readiness_reports_a_healthy_database(client: httpx.AsyncClient) -> None:
    ready = await client.get("/ok", params={"check_db": 1})
    assert ready.status_code == 200
    assert ready.json() == {"ok": True, "services": {"database": "healthy"}}


async def test_a_client_request_id_is_echoed_and_a_bad_one_replaced(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/ok", headers={"x-request-id": "lb-1234.abc"})
    assert echoed.headers["x-request-id"] == "lb-1234.abc"
    replaced = await client.get("/ok", headers={"x-request-id": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] not in ("", "bad id\twith spaces")
