"""Thread lifecycle over HTTP: TTLs and their sweep, prune, the thread stream, storage, extract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from runplane.api import ApiSettings, create_app
from runplane.core.manager import RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import FakeClock, memory_manager
from runplane.worker import Worker
from runplane.worker.sweeper import Sweeper
from tests.api._support import Sse, checkpoint_ids, serve
from tests.api.conftest import BASE_URL, api_runtime


async def _thread(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/threads", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["thread_id"])


async def test_ttl_on_create_and_update_is_swept() -> None:
    clock = FakeClock()
    manager = memory_manager(clock=clock)
    runtime = api_runtime()
    app = create_app(manager, runtime, ApiSettings())
    sweeper = Sweeper(manager, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        short = await _thread(client, ttl={"ttl": 1, "strategy": "delete"})
        longer = await _thread(client, ttl=5)  # a bare number of minutes is taken too
        kept = await _thread(client)
        updated = await _thread(client)
        assert (await client.patch(f"/threads/{updated}", json={"ttl": {"ttl": 2}})).status_code == 200
        await runtime.update_state("echo", short, {"n": 1})
        clock.advance(61)
        assert (await sweeper.sweep_once()).threads == 1
        assert (await client.get(f"/threads/{short}")).status_code == 404
        assert await checkpoint_ids(runtime, short) == []  # its checkpoints went too
        clock.advance(60)
        assert (await sweeper.sweep_once()).threads == 1
        assert (await client.get(f"/threads/{updated}")).status_code == 404
        clock.advance(10_000)
        await sweeper.sweep_once()
        assert (await client.get(f"/threads/{kept}")).status_code == 200
        assert (await client.get(f"/threads/{longer}")).status_code == 404
        bad = await client.post("/threads", json={"ttl": {"ttl": 1, "strategy": "keep"}})
        assert bad.status_code == 422


async def test_prune_delete_and_keep_latest(
    client: httpx.AsyncClient, runtime: LangGraphRuntime, worker: Worker
) -> None:
    first, second, third = [await _thread(client) for _ in range(3)]
    for thread_id in (first, second, third):
        for n in range(2):
            await client.post(
                f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": n}}
            )
    unknown = "00000000-0000-0000-0000-00000000abcd"
    pruned = await client.post("/threads/prune", json={"thread_ids": [first, unknown]})
    assert pruned.json() == {"pruned_count": 1}
    assert (await client.get(f"/threads/{first}")).status_code == 404
    before = (await client.get(f"/threads/{second}/state")).json()
    assert len(await checkpoint_ids(runtime, second)) > 1
    kept = await client.post("/threads/prune", json={"thread_ids": [second], "strategy": "keep_latest"})
    assert kept.json() == {"pruned_count": 1}
    assert len(await checkpoint_ids(runtime, second)) == 1
    assert (await client.get(f"/threads/{second}/state")).json() == before
    assert (await client.get(f"/threads/{third}")).status_code == 200
    assert (await client.post("/threads/prune", json={"thread_ids": ["nope"]})).status_code == 422


async def test_storage(client: httpx.AsyncClient, runtime: LangGraphRuntime) -> None:
    thread_id = await _thread(client)
    empty = (await client.get(f"/threads/{thread_id}/storage")).json()
    assert empty["thread_id"] == thread_id and empty["total_bytes"] == 0
    assert empty["checkpoints"] == {"count": 0, "bytes": 0}
    await runtime.update_state("echo", thread_id, {"n": 1})
    one = (await client.get(f"/threads/{thread_id}/storage")).json()
    assert one["checkpoints"]["count"] == 1 and one["total_bytes"] > 0
    assert (await client.get("/threads/00000000-0000-0000-0000-00000000abcd/storage")).status_code == 404


async def test_search_extract(client: httpx.AsyncClient, runtime: LangGraphRuntime, worker: Worker) -> None:
    thread_id = await _thread(client, metadata={"user": {"name": "ada"}, "tags": ["a", "b"]})
    await client.post(
        f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"items": [1, 2, 3]}}
    )
    extract = {
        "who": "metadata.user.name",
        "last": "values.items[-1]",
        "tag": "metadata.tags[0]",
        "no": "values.x.y",
    }
    found = (
        await client.post(
            "/threads/search", json={"ids": [thread_id], "extract": extract, "select": ["thread_id"]}
        )
    ).json()
    assert found == [{"thread_id": thread_id, "extracted": {"who": "ada", "last": 3, "tag": "a", "no": None}}]
    for bad in (
        {"thread_id": "values.x"},
        {"x": "status"},
        {"1x": "values.x"},
        {f"k{i}": "values.x" for i in range(11)},
    ):
        assert (await client.post("/threads/search", json={"extract": bad})).status_code == 422, bad


# -- the thread stream ---------------------------------------------------------------------------------


async def _events(
    url: str,
    thread_id: str,
    until_done: int,
    connected: asyncio.Event | None = None,
    mode: str | None = None,
    **headers: str,
) -> AsyncIterator[Sse]:
    """The thread stream's events until `until_done` runs have ended (the stream itself never ends).
    `connected` is set once the response started: the stream has read the thread's runs by then."""
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        params = {"stream_mode": mode} if mode else None
        path = f"/threads/{thread_id}/stream"
        async with http.stream("GET", path, headers=headers, params=params) as response:
            assert response.status_code == 200
            if connected is not None:
                connected.set()
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        fields[name] = value
                    continue
                if "event" not in fields:
                    continue
                event = Sse(fields["event"], orjson.loads(fields["data"]), fields.get("id"))
                fields = {}
                yield event
                if event.event == "metadata" and event.data.get("status") == "run_done":
                    done += 1
                    if done == until_done:
                        return


async def _collect(
    url: str,
    thread_id: str,
    until_done: int,
    connected: asyncio.Event | None = None,
    mode: str | None = None,
    **headers: str,
) -> list[Sse]:
    return [event async for event in _events(url, thread_id, until_done, connected, mode, **headers)]


async def test_thread_stream_follows_runs_one_after_another(
    app: Starlette, client: httpx.AsyncClient, worker: Worker, manager: RunManager
) -> None:
    thread_id = await _thread(client)
    async with serve(app) as url:
        connected = asyncio.Event()
        listening = asyncio.create_task(_collect(url, thread_id, 2, connected))
        await connected.wait()  # the stream joined before the runs exist: it must pick them up
        first = await client.post(
            f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 1}}
        )
        second = await client.post(
            f"/threads/{thread_id}/runs", json={"assistant_id": "echo", "input": {"n": 2}}
        )
        run_ids = [r["run_id"] for r in (await client.get(f"/threads/{thread_id}/runs")).json()][::-1]
        assert first.status_code == second.status_code == 200
        events = await asyncio.wait_for(listening, 10)
    runs_in_order = [e.id.split("/")[0] for e in events if e.id]
    assert runs_in_order == sorted(runs_in_order, key=run_ids.index)  # one run, then the next
    done = [e.data for e in events if e.event == "metadata" and "status" in e.data]
    assert done == [
        {"status": "run_done", "run_id": run_ids[0]},
        {"status": "run_done", "run_id": run_ids[1]},
    ]
    assert [e.event for e in events if e.id and e.id.startswith(run_ids[0])] == [
        "metadata",
        "values",
        "values",
        "metadata",
    ]  # the run's own stream (its `values` mode), then its end


async def test_thread_stream_resumes_after_last_event_id(
    app: Starlette, client: httpx.AsyncClient, worker: Worker
) -> None:
    thread_id = await _thread(client)
    for n in (1, 2):
        await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": n}})
    async with serve(app) as url:
        # Both runs ended before joining: a fresh join waits for new runs; a resumed one replays.
        first_run = (await client.get(f"/threads/{thread_id}/runs")).json()[-1]["run_id"]
        replayed = await asyncio.wait_for(
            _collect(url, thread_id, 2, None, None, **{"Last-Event-ID": f"{first_run}/"}), 10
        )
        assert replayed[0].id and replayed[0].id.startswith(first_run)
        cut = replayed[2].id
        assert cut is not None
        resumed = await asyncio.wait_for(
            _collect(url, thread_id, 2, None, None, **{"Last-Event-ID": cut}), 10
        )
        assert [e.id for e in resumed] == [e.id for e in replayed[3:]]
        lifecycle = await asyncio.wait_for(
            _collect(url, thread_id, 2, None, "lifecycle", **{"Last-Event-ID": f"{first_run}/"}), 10
        )
        assert {e.event for e in lifecycle} == {"metadata"}  # run starts and ends only
        assert len(lifecycle) == 4
    bad = await client.get(f"/threads/{thread_id}/stream", headers={"Last-Event-ID": "garbage"})
    assert bad.status_code == 422
    assert (await client.get("/threads/00000000-0000-0000-0000-00000000abcd/stream")).status_code == 404
