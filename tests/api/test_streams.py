"""SSE streams, resumption, heartbeats and what a client leaving does to its run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from runplane.core.manager import RunManager
from runplane.worker import Worker
from tests.api._support import ended, parse_sse
from tests.api.graphs import Gates


async def _thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/threads", json={})).json()["thread_id"])


async def test_stream_modes_and_headers(client: httpx.AsyncClient, worker: Worker) -> None:
    thread_id = await _thread(client)
    response = await client.post(
        f"/threads/{thread_id}/runs/stream",
        json={"assistant_id": "echo", "input": {"n": 1}, "stream_mode": ["values", "updates"]},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    events = parse_sse(response.text)
    run_id = events[0].data["run_id"]
    assert response.headers["content-location"] == f"/threads/{thread_id}/runs/{run_id}"
    assert response.headers["location"] == f"/threads/{thread_id}/runs/{run_id}/stream"
    assert [(e.event, e.data) for e in events] == [
        ("metadata", {"run_id": run_id, "attempt": 1}),
        ("values", {"n": 1}),
        ("updates", {"echo": {"echoed": True}}),  # what the node returned, as LangGraph streams it
        ("values", {"n": 1, "echoed": True}),
    ]
    assert all(e.id is None for e in events)  # not resumable: no ids, as the reference server


async def test_single_stream_mode_string_and_custom(client: httpx.AsyncClient, worker: Worker) -> None:
    response = await client.post(
        "/runs/stream", json={"assistant_id": "ticker", "input": {"n": 2}, "stream_mode": "custom"}
    )
    events = parse_sse(response.text)
    assert [e.event for e in events] == ["metadata", "custom", "custom"]
    assert response.headers["content-location"].startswith("/runs/")


async def test_error_event(client: httpx.AsyncClient, worker: Worker) -> None:
    response = await client.post("/runs/stream", json={"assistant_id": "failer", "input": {}})
    events = parse_sse(response.text)
    assert events[-1].event == "error"
    assert events[-1].data == {"error": "ValueError", "message": "boom!"}


async def test_resumable_stream_and_join_stream_resume(client: httpx.AsyncClient, worker: Worker) -> None:
    thread_id = await _thread(client)
    response = await client.post(
        f"/threads/{thread_id}/runs/stream",
        json={
            "assistant_id": "ticker",
            "input": {"n": 5},
            "stream_mode": ["custom", "values"],
            "stream_resumable": True,
        },
    )
    events = parse_sse(response.text)
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)
    run_id = events[0].data["run_id"]
    url = f"/threads/{thread_id}/runs/{run_id}/stream"

    resumed = parse_sse((await client.get(url, headers={"Last-Event-ID": str(events[3].id)})).text)
    assert resumed == events[4:]

    replayed = parse_sse((await client.get(url, headers={"Last-Event-ID": "-1"})).text)
    assert replayed == events

    # As on the reference server, a join without Last-Event-ID hears only what happens from now on:
    # of a finished run, nothing.
    assert parse_sse((await client.get(url)).text) == []
    replay = {"Last-Event-ID": "-1"}
    only_custom = parse_sse((await client.get(url, params={"stream_mode": "custom"}, headers=replay)).text)
    assert [e.data for e in only_custom] == [{"i": i} for i in range(5)]
    two_modes = parse_sse(
        (
            await client.get(
                url, params=[("stream_mode", "custom"), ("stream_mode", "values")], headers=replay
            )
        ).text
    )
    assert [e.event for e in two_modes] == [e.event for e in events[1:]]


async def test_join_stream_rejects_garbage_last_event_id(client: httpx.AsyncClient, worker: Worker) -> None:
    thread_id = await _thread(client)
    run = (await client.post(f"/threads/{thread_id}/runs", json={"assistant_id": "echo"})).json()
    response = await client.get(
        f"/threads/{thread_id}/runs/{run['run_id']}/stream", headers={"Last-Event-ID": "not-an-id"}
    )
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json()["detail"]
    bad_mode = await client.get(
        f"/threads/{thread_id}/runs/{run['run_id']}/stream", params={"stream_mode": "bogus"}
    )
    assert bad_mode.status_code == 422


async def test_heartbeats_while_quiet(client: httpx.AsyncClient, worker: Worker, gates: Gates) -> None:
    async def release(gate: str) -> None:
        await asyncio.sleep(0.3)  # several heartbeat periods, and longer than the wait fallback
        gates.open(gate)

    releaser = asyncio.create_task(release("hb-stream"))
    response = await client.post(
        "/runs/stream", json={"assistant_id": "sleepy", "input": {"gate": "hb-stream"}}
    )
    await releaser
    assert ": heartbeat\n\n" in response.text
    assert [e.event for e in parse_sse(response.text)] == ["metadata", "values", "values"]

    thread_id = await _thread(client)
    releaser = asyncio.create_task(release("hb-wait"))
    waited = await client.post(
        f"/threads/{thread_id}/runs/wait", json={"assistant_id": "sleepy", "input": {"gate": "hb-wait"}}
    )
    await releaser
    assert waited.content.startswith(b"\n")  # keep-alive newlines, then the JSON
    assert waited.json() == {"gate": "hb-wait", "slept": True}


# -- disconnects, driven through raw ASGI with a `receive` we control ------------------------------


class Client:
    """One raw ASGI request whose client can hang up on demand."""

    def __init__(self, app: Starlette, method: str, path: str, body: Any = None, query: str = "") -> None:
        self.app = app
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"content-type", b"application/json")],
            "scheme": "http",
            "server": ("t", 80),
            "client": ("c", 1),
            "root_path": "",
        }
        self.body = orjson.dumps(body) if body is not None else b""
        self.hang_up = asyncio.Event()
        self.sent: list[MutableMapping[str, Any]] = []
        self.chunk = asyncio.Event()
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)
        self.chunk.set()

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self.app(self.scope, self.receive, self.send))

    async def until_started(self) -> None:
        """Until the response has begun: the request's handler has run (the stream is joined)."""
        while not any(m["type"] == "http.response.start" for m in self.sent):
            self.chunk.clear()
            async with asyncio.timeout(2):
                await self.chunk.wait()

    async def until(self, predicate: Callable[[bytes], bool]) -> None:
        for _ in range(400):
            if predicate(self.text):
                return
            self.chunk.clear()
            async with asyncio.timeout(2):
                await self.chunk.wait()
        raise AssertionError(self.text)

    @property
    def text(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])


def _run_id(text: bytes) -> str:
    return str(parse_sse(text.decode())[0].data["run_id"])


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue", None])
async def test_stream_on_disconnect(
    app: Starlette,
    client: httpx.AsyncClient,
    worker: Worker,
    manager: RunManager,
    on_disconnect: str | None,
    gates: Gates,
) -> None:
    gate = f"disc-{on_disconnect}"
    body: dict[str, Any] = {"assistant_id": "sleepy", "input": {"gate": gate}}
    if on_disconnect:
        body["on_disconnect"] = on_disconnect
    thread_id = await _thread(client)
    raw = Client(app, "POST", f"/threads/{thread_id}/runs/stream", body)
    task = raw.start()
    await raw.until(lambda text: b"event: values" in text)
    run_id = _run_id(raw.text)
    raw.hang_up.set()
    await task
    if on_disconnect == "cancel":
        assert await ended(manager, run_id) == "interrupted"
    else:
        assert (await manager.get_run(run_id)).status == "running"
        gates.open(gate)
        assert await ended(manager, run_id) == "success"


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue"])
async def test_wait_on_disconnect(
    app: Starlette,
    client: httpx.AsyncClient,
    worker: Worker,
    manager: RunManager,
    on_disconnect: str,
    gates: Gates,
) -> None:
    thread_id = await _thread(client)
    gate = f"wait-{on_disconnect}"
    raw = Client(
        app,
        "POST",
        f"/threads/{thread_id}/runs/wait",
        {"assistant_id": "sleepy", "input": {"gate": gate}, "on_disconnect": on_disconnect},
    )
    task = raw.start()
    await raw.until(lambda text: text.startswith(b"\n"))  # headers sent, then a heartbeat
    assert raw.status == 200
    run = (await client.get(f"/threads/{thread_id}/runs")).json()[0]
    raw.hang_up.set()
    await task
    if on_disconnect == "cancel":
        assert await ended(manager, run["run_id"]) == "interrupted"
    else:
        gates.open(gate)
        assert await ended(manager, run["run_id"]) == "success"


@pytest.mark.parametrize("endpoint", ["join", "stream"])
@pytest.mark.parametrize("cancel", [True, False])
async def test_join_cancel_on_disconnect(
    app: Starlette,
    client: httpx.AsyncClient,
    worker: Worker,
    manager: RunManager,
    endpoint: str,
    cancel: bool,
    gates: Gates,
) -> None:
    thread_id = await _thread(client)
    gate = f"join-{endpoint}-{cancel}"
    run = (
        await client.post(
            f"/threads/{thread_id}/runs", json={"assistant_id": "sleepy", "input": {"gate": gate}}
        )
    ).json()
    await gates.entered(gate)
    raw = Client(
        app,
        "GET",
        f"/threads/{thread_id}/runs/{run['run_id']}/{endpoint}",
        query=f"cancel_on_disconnect={str(cancel).lower()}",
    )
    task = raw.start()
    await raw.until(lambda text: len(text) > 0)
    raw.hang_up.set()
    await task
    if cancel:
        assert await ended(manager, run["run_id"]) == "interrupted"
    else:
        assert (await manager.get_run(run["run_id"])).status == "running"
        gates.open(gate)
        assert await ended(manager, run["run_id"]) == "success"


async def test_live_join_stream_sees_events_as_they_happen(
    app: Starlette, client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    run = (
        await client.post(
            f"/threads/{thread_id}/runs",
            json={"assistant_id": "sleepy", "input": {"gate": "live"}, "stream_mode": ["custom", "values"]},
        )
    ).json()
    await gates.entered("live")
    # The run's first events are out before the client joins...
    first = await manager.stream_run(run["run_id"])
    assert [(await anext(first)).event for _ in range(2)] == ["metadata", "values"]
    raw = Client(app, "GET", f"/threads/{thread_id}/runs/{run['run_id']}/stream")
    task = raw.start()
    await raw.until_started()
    gates.tick("live")
    await raw.until(lambda text: b'{"i":0}' in text)
    gates.tick("live")
    await raw.until(lambda text: b'{"i":1}' in text)
    gates.open("live")
    await task
    events = parse_sse(raw.text.decode())
    # ...and, as on the reference server, a join without Last-Event-ID hears only what comes next.
    assert [e.event for e in events] == ["custom", "custom", "values"]
    assert all(e.id for e in events)


async def test_join_stream_of_a_pending_run_starts_at_its_metadata_event(
    app: Starlette, client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    await _run_json(client, thread_id, {"assistant_id": "sleepy", "input": {"gate": "pending-join"}})
    await gates.entered("pending-join")
    queued = await _run_json(
        client, thread_id, {"assistant_id": "ticker", "input": {"n": 2}, "stream_mode": "custom"}
    )
    assert (await manager.get_run(queued["run_id"])).status == "pending"
    raw = Client(app, "GET", f"/threads/{thread_id}/runs/{queued['run_id']}/stream")
    task = raw.start()
    await raw.until_started()  # joined while the run waits in the queue
    gates.open("pending-join")
    await task
    events = parse_sse(raw.text.decode())
    assert [e.event for e in events] == ["metadata", "custom", "custom"]


OnSend = Callable[[dict[str, Any]], Awaitable[None]]


async def test_send_failure_counts_as_disconnect(app: Starlette, worker: Worker, manager: RunManager) -> None:
    """An ASGI >= 2.4 server raises OSError on send to a client that left."""
    thread_id = (await manager.create_thread()).thread_id
    raw = Client(
        app,
        "POST",
        f"/threads/{thread_id}/runs/stream",
        {"assistant_id": "sleepy", "input": {"gate": "oserror"}, "on_disconnect": "cancel"},
    )
    original = raw.send

    async def failing_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"event: values" in message.get("body", b""):
            raise OSError("client gone")
        await original(message)

    raw.send = failing_send  # type: ignore[method-assign]
    await raw.start()
    run_id = _run_id(raw.text)
    assert await ended(manager, run_id) == "interrupted"


async def test_stream_unknown_run_is_404(client: httpx.AsyncClient) -> None:
    thread_id = await _thread(client)
    response = await client.get(f"/threads/{thread_id}/runs/{uuid.uuid4()}/stream")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"


async def test_empty_query_values(client: httpx.AsyncClient, worker: Worker) -> None:
    """httpx sends the SDK's `stream_mode=None` as `stream_mode=`: it means every mode."""
    thread_id = await _thread(client)
    run = (await client.post(f"/threads/{thread_id}/runs", json={"assistant_id": "echo"})).json()
    url = f"/threads/{thread_id}/runs/{run['run_id']}/stream"
    response = await client.get(url, params={"stream_mode": None, "cancel_on_disconnect": False})
    assert response.status_code == 200
    assert parse_sse(response.text)[0].event == "metadata"
    assert (await client.get(f"/threads/{thread_id}/state", params={"subgraphs": ""})).status_code == 422


async def _run_json(client: httpx.AsyncClient, thread_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/threads/{thread_id}/runs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())
