"""The example application (examples/embedded_app), through its own routes and its own auth: what
a team that embeds runplane in its web app gets, tested the way that team would test it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
from examples.embedded_app.app import create_app
from langgraph_sdk import get_client

from tests.embedding._support import ALICE, BOB, parse_sse, serve, until


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


async def new_thread(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/threads", headers=ALICE)
    assert response.status_code == 200
    return str(response.json()["thread_id"])


async def send(client: httpx.AsyncClient, thread_id: str, text: str, **extra: object) -> httpx.Response:
    return await client.post(
        f"/api/threads/{thread_id}/messages", json={"text": text, **extra}, headers=ALICE
    )


async def status_of(client: httpx.AsyncClient, thread_id: str, run_id: str) -> str:
    response = await client.get(f"/api/threads/{thread_id}/runs/{run_id}", headers=ALICE)
    return str(response.json()["status"])


async def test_a_run_and_its_messages_survive_a_restart_of_the_app(tmp_path: Path) -> None:
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "hello")).json()
        joined = await client.get(f"/api/threads/{thread_id}/runs/{run['run_id']}/join", headers=ALICE)
        assert joined.json()["status"] == "success"
    # A new process (a new app over the same database): history and state are still there.
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        runs = (await client.get(f"/api/threads/{thread_id}/runs", headers=ALICE)).json()
        assert [(r["run_id"], r["status"]) for r in runs] == [(run["run_id"], "success")]
        messages = (await client.get(f"/api/threads/{thread_id}/messages", headers=ALICE)).json()
        assert messages == {"messages": ["hello", "echo: hello"]}


async def test_a_run_queued_when_the_app_stops_runs_when_it_starts_again(tmp_path: Path) -> None:
    async with serve(create_app(sqlite_url(tmp_path), workers=0)) as client:  # nobody executes
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "later")).json()
        assert run["status"] == "pending"
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        joined = await client.get(f"/api/threads/{thread_id}/runs/{run['run_id']}/join", headers=ALICE)
        assert joined.json()["status"] == "success"


async def test_cancel_stops_a_running_run_and_frees_its_thread(tmp_path: Path) -> None:
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "think forever", gate=str(tmp_path / "never"))).json()
        await until(lambda: _is(client, thread_id, run["run_id"], "running"), "the run to start")
        cancelled = await client.post(f"/api/threads/{thread_id}/runs/{run['run_id']}/cancel", headers=ALICE)
        assert cancelled.json()["status"] == "interrupted"
        after = (await send(client, thread_id, "next")).json()  # `reject`: the thread is free again
        joined = await client.get(f"/api/threads/{thread_id}/runs/{after['run_id']}/join", headers=ALICE)
        assert joined.json()["status"] == "success"
    async with serve(create_app(sqlite_url(tmp_path))) as client:  # and the cancel is durable
        assert await status_of(client, thread_id, run["run_id"]) == "interrupted"


async def _is(client: httpx.AsyncClient, thread_id: str, run_id: str, status: str) -> bool:
    return await status_of(client, thread_id, run_id) == status


async def test_of_concurrent_messages_on_one_thread_exactly_one_is_admitted(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        replies = await asyncio.gather(
            *(send(client, thread_id, f"message {i}", gate=str(gate)) for i in range(8))
        )
        assert sorted(r.status_code for r in replies) == [200] + [409] * 7
        assert all("thread" in r.json()["detail"] for r in replies if r.status_code == 409)
        gate.touch()
        admitted = next(r.json() for r in replies if r.status_code == 200)
        joined = await client.get(f"/api/threads/{thread_id}/runs/{admitted['run_id']}/join", headers=ALICE)
        assert joined.json()["status"] == "success"
        assert len((await client.get(f"/api/threads/{thread_id}/runs", headers=ALICE)).json()) == 1


async def test_the_stream_route_serves_the_run_live_and_resumes_after_last_event_id(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "stream me", gate=str(gate))).json()
        path = f"/api/threads/{thread_id}/runs/{run['run_id']}/stream"
        async with client.stream("GET", path, headers=ALICE) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = response.aiter_text()
            first = await anext(chunks)  # the run is live: its first event came before the gate opened
            gate.touch()
            text = first + "".join([chunk async for chunk in chunks])
        events = parse_sse(text)
        assert [e["event"] for e in events] == ["metadata", "values", "values"]
        assert events[1]["data"]["messages"] == ["stream me"]
        assert events[0]["data"]["run_id"] == run["run_id"]
        assert events[-1]["data"]["messages"] == ["stream me", "echo: stream me"]
        resumed = await client.get(path, headers={**ALICE, "last-event-id": events[1]["id"]})
        assert parse_sse(resumed.text) == events[2:]


async def test_the_apps_own_auth_guards_its_routes_and_scopes_runs_by_user(tmp_path: Path) -> None:
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        assert (await client.post("/api/threads")).status_code == 401
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "mine")).json()
        # Bob does not see Alice's thread or run: not found, exactly as for a missing one.
        assert (
            await client.get(f"/api/threads/{thread_id}/runs/{run['run_id']}", headers=BOB)
        ).status_code == 404
        bob_send = await client.post(f"/api/threads/{thread_id}/messages", json={"text": "x"}, headers=BOB)
        assert bob_send.status_code == 404


async def test_the_mounted_agent_api_serves_langgraph_sdk_clients_under_the_apps_prefix(
    tmp_path: Path,
) -> None:
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        sdk = get_client(url=str(client.base_url.join("/agents")), api_key=None, headers=ALICE)
        # A run created through the app's own route is the same run the SDK sees.
        run = (await send(client, thread_id, "hi")).json()
        joined = await sdk.runs.join(thread_id, run["run_id"])
        assert joined["messages"] == ["hi", "echo: hi"]
        raw = await client.post(
            f"/agents/threads/{thread_id}/runs",
            json={"assistant_id": "agent", "input": {"messages": ["x"]}},
            headers=ALICE,
        )
        assert raw.headers["content-location"].startswith(f"/agents/threads/{thread_id}/runs/")  # the prefix
        await sdk.runs.join(thread_id, raw.json()["run_id"])
        created = await sdk.runs.create(
            thread_id, "agent", input=cast(dict[str, Any], {"messages": ["again"]})
        )
        assert created["status"] in ("pending", "running", "success")
        await sdk.runs.join(thread_id, created["run_id"])
        runs = (await client.get(f"/api/threads/{thread_id}/runs", headers=ALICE)).json()
        assert {r["run_id"] for r in runs} == {run["run_id"], raw.json()["run_id"], created["run_id"]}
        # The app's auth covers the mounted API too: no token, no access; Bob sees nothing of Alice.
        anonymous = await client.get(f"/agents/threads/{thread_id}")
        assert anonymous.status_code == 401
        assert (await client.get(f"/agents/threads/{thread_id}", headers=BOB)).status_code == 404


async def test_deleting_a_running_run_stops_it(tmp_path: Path) -> None:
    async with serve(create_app(sqlite_url(tmp_path))) as client:
        thread_id = await new_thread(client)
        run = (await send(client, thread_id, "wait", gate=str(tmp_path / "never"))).json()
        await until(lambda: _is(client, thread_id, run["run_id"], "running"), "the run to start")
        deleted = await client.delete(f"/api/threads/{thread_id}/runs/{run['run_id']}", headers=ALICE)
        assert deleted.status_code == 204
        gone = await client.get(f"/api/threads/{thread_id}/runs/{run['run_id']}", headers=ALICE)
        assert gone.status_code == 404
        assert (await send(client, thread_id, "free")).status_code == 200
