"""Hostile input: every bad request gets a clear 4xx JSON error, changes nothing, and the server
keeps serving."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from runplane.api import ApiSettings, create_app
from runplane.api.app import ENDPOINTS
from runplane.api.errors import ApiError
from runplane.api.routing import check_json_depth
from runplane.api.schemas import MAX_DELAY_SECONDS, MAX_METADATA_BYTES
from runplane.core.manager import ManagerSettings, RunManager
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import parse_sse
from tests.api.conftest import api_runtime, api_worker

BASE_URL = "http://runplane.test"
MAX_BODY = 256 * 1024


@dataclass
class Server:
    client: httpx.AsyncClient
    manager: RunManager
    worker: Worker
    thread_id: str
    run_id: str


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))
    runtime = api_runtime()
    worker = api_worker(manager, runtime)
    await worker.start()
    settings = ApiSettings(max_body_bytes=MAX_BODY, heartbeat_seconds=0.05, max_wait_seconds=0.3)
    app = create_app(manager, runtime, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        thread = (await client.post("/threads", json={"metadata": {"k": "v"}})).json()
        await client.post(
            f"/threads/{thread['thread_id']}/runs/wait", json={"assistant_id": "echo", "input": {}}
        )
        run = (await client.get(f"/threads/{thread['thread_id']}/runs")).json()[0]
        try:
            yield Server(client, manager, worker, thread["thread_id"], run["run_id"])
        finally:
            await worker.stop()


async def state_of(server: Server) -> Any:
    threads = (await server.client.post("/threads/search", json={"limit": 1000})).json()
    runs = [(await server.client.get(f"/threads/{t['thread_id']}/runs")).json() for t in threads]
    return threads, runs


async def refused(
    server: Server, status: int | tuple[int, ...], method: str, path: str, **kwargs: Any
) -> str:
    """Send a bad request: it must get `status` with a JSON `detail`, change nothing, and leave the
    server serving. Returns the detail."""
    before = await state_of(server)
    response = await server.client.request(method, path, **kwargs)
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (method, path, response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert await state_of(server) == before
    assert (await server.client.get("/ok")).status_code == 200
    return detail


JSON = {"content-type": "application/json"}


async def test_oversize_bodies(server: Server) -> None:
    big = b'{"metadata": {"x": "' + b"a" * MAX_BODY + b'"}}'
    for path in ("/threads", f"/threads/{server.thread_id}/runs", "/runs/batch"):
        assert "exceeds" in await refused(server, 413, "POST", path, content=big, headers=JSON)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"input": "'
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"a" * 1024
        yield b'"}'

    await refused(server, 413, "POST", "/runs/wait", content=chunks(), headers=JSON)
    await refused(server, 400, "POST", "/threads", content=b"{}", headers={**JSON, "content-length": "-x"})


async def test_deep_nesting(server: Server) -> None:
    def nested(depth: int) -> bytes:
        return b"[" * depth + b"]" * depth

    ok_body = b'{"metadata": {"a": ' + nested(62) + b"}}"  # 64 levels in all
    assert (await server.client.post("/threads", content=ok_body, headers=JSON)).status_code == 200
    too_deep = b'{"metadata": {"a": ' + nested(63) + b"}}"
    assert "deeper than 64" in await refused(server, 422, "POST", "/threads", content=too_deep, headers=JSON)
    # Brackets inside strings do not count; escaped quotes do not end a string.
    strings = b'{"metadata": {"a": "' + b'[{\\"' * 1000 + b'"}}'
    assert (await server.client.post("/threads", content=strings, headers=JSON)).status_code == 200
    # A huge hostile nesting is refused fast, for every body route.
    bomb = b'{"input": ' + b'{"a":' * 40_000 + b"1" + b"}" * 40_000 + b"}"
    started = time.perf_counter()
    for endpoint in ENDPOINTS:
        if endpoint.body is not None and "{" not in endpoint.path:
            await refused(server, 422, endpoint.method, endpoint.path, content=bomb, headers=JSON)
    assert time.perf_counter() - started < 5
    await refused(server, 422, "POST", "/runs/batch", content=nested(10_000), headers=JSON)


def test_depth_check_edges() -> None:
    check_json_depth(b"[]" * 1000, 1)
    check_json_depth(b'{"a": [1, {"b": []}]}', 4)
    check_json_depth(b'"[[[[["', 1)
    check_json_depth(b"[[[", 1)  # unbalanced: left to the parser
    check_json_depth(b'{"a": {"b": [[]]}, "c": [{}]}', 4)  # objects and arrays count alike
    with pytest.raises(ApiError):
        check_json_depth(b'{"a": {"b": [[]]}, "c": [{}]}', 3)
    with pytest.raises(ApiError):
        check_json_depth(b'{"a": [1, {"b": []}]}', 3)
    with pytest.raises(ApiError):
        check_json_depth(b'["\\\\", [[]]]', 2)  # an escaped backslash ends the string before "]"


async def test_metadata_size(server: Server) -> None:
    huge = {"blob": "x" * MAX_METADATA_BYTES}
    for method, path, body in (
        ("POST", "/threads", {"metadata": huge}),
        ("PATCH", f"/threads/{server.thread_id}", {"metadata": huge}),
        ("POST", f"/threads/{server.thread_id}/runs", {"assistant_id": "echo", "metadata": huge}),
        ("POST", "/runs/wait", {"assistant_id": "echo", "metadata": huge}),
        ("POST", "/runs/batch", [{"assistant_id": "echo", "metadata": huge}]),
    ):
        assert "metadata" in await refused(server, 422, method, path, json=body)
    fits = {"blob": "x" * (MAX_METADATA_BYTES - 20)}
    assert (await server.client.post("/threads", json={"metadata": fits})).status_code == 200


async def test_page_bounds(server: Server) -> None:
    for raw in (
        b'{"limit": 1001}',
        b'{"limit": 0}',
        b'{"limit": -1}',
        b'{"offset": -1}',
        b'{"offset": 9223372036854775808}',
        b'{"limit": 1e400}',
        b'{"limit": 10.5}',
    ):
        await refused(server, 422, "POST", "/threads/search", content=raw, headers=JSON)
    for params in ({"limit": "5000"}, {"limit": "-1"}, {"offset": "-3"}, {"limit": "1e9"}):
        await refused(server, 422, "GET", f"/threads/{server.thread_id}/runs", params=params)
    await refused(server, 422, "GET", f"/threads/{server.thread_id}/history", params={"limit": "100000"})
    await refused(server, 422, "POST", "/assistants/search", json={"limit": 10**6})


async def test_ids_are_validated_on_every_route(server: Server) -> None:
    ids = {"thread_id": server.thread_id, "run_id": server.run_id}
    ids |= {"checkpoint_id": "c", "assistant_id": "echo", "namespace": "n"}
    bad_values = (
        "not-a-uuid",
        "1234",
        "'; DROP TABLE threads; --",
        "%00",
        "a" * 5000,
        server.thread_id + "0",
    )
    checked = 0
    for endpoint in ENDPOINTS:
        for name in ("thread_id", "run_id"):
            if f"{{{name}}}" not in endpoint.path:
                continue
            for bad in bad_values:
                path = endpoint.path.format(**{**ids, name: bad})
                body: dict[str, Any] | None = {} if endpoint.body is not None else None
                detail = await refused(server, 422, endpoint.method, path, json=body)
                assert detail == f"Invalid {name.removesuffix('_id')} ID: must be a UUID"
                checked += 1
    assert checked >= 100
    # Any case is accepted and answered in canonical form.
    upper = (await server.client.get(f"/threads/{server.thread_id.upper()}")).json()
    assert upper["thread_id"] == server.thread_id


async def test_garbage_last_event_id(server: Server) -> None:
    path = f"/threads/{server.thread_id}/runs/{server.run_id}/stream"
    for value in ("abc", "1-2-3", "9" * 40, "-2", "1;DROP", "x" * 10_000, " 1"):
        detail = await refused(server, 422, "GET", path, headers={"Last-Event-ID": value})
        assert "Last-Event-ID" in detail and len(detail) < 200


async def test_unknown_stream_modes(server: Server) -> None:
    for mode in ("bogus", ["values", "nope"], "", 5):
        body = {"assistant_id": "echo", "stream_mode": mode}
        assert "stream_mode" in await refused(
            server, 422, "POST", f"/threads/{server.thread_id}/runs/stream", json=body
        )
    join = f"/threads/{server.thread_id}/runs/{server.run_id}/stream"
    await refused(server, 422, "GET", join, params={"stream_mode": "bogus"})


async def test_malformed_bodies(server: Server) -> None:
    for raw in (
        b"{not json",
        b'{"assistant_id": "echo"',
        b'{"assistant_id": "echo"}}',
        b"\xff\xfe{}",
        b'{"assistant_id": "ech\xc3\x28"}',  # invalid UTF-8
        b'{"assistant_id": "echo", "input": NaN}',
        b'{"assistant_id": "echo", "after_seconds": Infinity}',
        b'{"assistant_id": "echo\x00"}',
        b'{"assistant_id": "echo", "input": [1, -Infinity]}',
        b"\x00" * 64,
    ):
        await refused(server, (400, 422), "POST", "/runs/wait", content=raw, headers=JSON)
    for raw in (b"[]", b"null", b"1", b'"x"', b"true"):
        await refused(server, 422, "POST", "/threads", content=raw, headers=JSON)
    # The words themselves are fine inside strings.
    words = b'{"metadata": {"NaN": "Infinity and -Infinity"}}'
    assert (await server.client.post("/threads", content=words, headers=JSON)).status_code == 200


async def test_wrong_content_types(server: Server) -> None:
    body = b'{"assistant_id": "echo"}'
    for content_type in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/jsonp",
    ):
        detail = await refused(
            server, 415, "POST", "/runs/wait", content=body, headers={"content-type": content_type}
        )
        assert "application/json" in detail
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        "application/merge-patch+json",
    ):
        response = await server.client.post("/threads", content=b"{}", headers={"content-type": content_type})
        assert response.status_code == 200, content_type
    # No declared type is read as JSON (the SDK posts copy and cancel without a body or a type).
    assert (await server.client.post("/threads", content=b"{}")).status_code == 200
    copy = await server.client.post(
        f"/threads/{server.thread_id}/copy", headers={"content-type": "text/plain"}
    )
    assert copy.status_code == 200  # an empty body is no body, whatever its declared type


async def test_huge_headers(server: Server) -> None:
    detail = await refused(
        server, 431, "GET", f"/threads/{server.thread_id}", headers={"x-junk": "a" * 40_000}
    )
    assert "headers" in detail
    many = {f"x-h{i}": "v" * 100 for i in range(400)}
    await refused(server, 431, "POST", "/threads", json={}, headers=many)
    assert (
        await server.client.get(f"/threads/{server.thread_id}", headers={"x-fine": "a" * 8000})
    ).status_code == 200


async def test_after_seconds_is_bounded(server: Server) -> None:
    for delay in (MAX_DELAY_SECONDS + 1, 10 * 365 * 86400, -0.5):
        body = {"assistant_id": "echo", "after_seconds": delay}
        assert "after_seconds" in await refused(
            server, 422, "POST", f"/threads/{server.thread_id}/runs", json=body
        )


async def test_waits_and_streams_are_bounded(server: Server) -> None:
    """A run that will not finish soon cannot hold a request past the server's `max_wait_seconds`."""
    client = server.client
    started = time.perf_counter()
    waited = await client.post(
        f"/threads/{server.thread_id}/runs/wait", json={"assistant_id": "echo", "after_seconds": 3600}
    )
    assert waited.status_code == 200
    assert waited.json()["__error__"]["error"] == "TimeoutError"
    pending = (await client.get(f"/threads/{server.thread_id}/runs")).json()[0]
    assert pending["status"] == "pending"  # the run goes on
    joined = await client.get(f"/threads/{server.thread_id}/runs/{pending['run_id']}/join")
    assert joined.json()["__error__"]["error"] == "TimeoutError"
    stream = await client.get(f"/threads/{server.thread_id}/runs/{pending['run_id']}/stream")
    assert stream.status_code == 200 and parse_sse(stream.text) == []
    streamed = await client.post("/runs/stream", json={"assistant_id": "sleepy", "input": {"gate": "never"}})
    assert [e.event for e in parse_sse(streamed.text)][:1] == ["metadata"]
    assert time.perf_counter() - started < 3
    cancel = await client.post(f"/threads/{server.thread_id}/runs/{pending['run_id']}/cancel")
    assert cancel.status_code == 202
