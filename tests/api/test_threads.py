"""`/threads`: records, search, state and history, in-process."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from runplane.runtime.graphs import LangGraphRuntime
from runplane.worker import Worker
from tests.api._support import checkpoint_ids
from tests.api.graphs import Gates


async def _thread(client: httpx.AsyncClient, **body: object) -> dict[str, Any]:
    response = await client.post("/threads", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_create_get_patch_delete(client: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    created = await _thread(client, thread_id=thread_id, metadata={"user": "u1"})
    assert created["thread_id"] == thread_id
    assert created["status"] == "idle"
    assert created["values"] is None and created["interrupts"] == {}
    assert created["created_at"].endswith("+00:00")

    got = (await client.get(f"/threads/{thread_id}")).json()
    assert got == created

    patched = await client.patch(f"/threads/{thread_id}", json={"metadata": {"added": True}})
    assert patched.json()["metadata"] == {"user": "u1", "added": True}
    minimal = await client.patch(
        f"/threads/{thread_id}", json={"metadata": {"b": 2}}, headers={"Prefer": "return=minimal"}
    )
    assert minimal.status_code == 204 and minimal.content == b""

    assert (await client.delete(f"/threads/{thread_id}")).status_code == 204
    again = await client.delete(f"/threads/{thread_id}")
    assert again.status_code == 404
    assert "detail" in again.json()


async def test_create_normalises_uuid_case_and_if_exists(client: httpx.AsyncClient) -> None:
    thread_id = str(uuid.uuid4())
    created = await _thread(client, thread_id=thread_id.upper(), metadata={"a": 1})
    assert created["thread_id"] == thread_id

    duplicate = await client.post("/threads", json={"thread_id": thread_id})
    assert duplicate.status_code == 409
    same = await client.post(
        "/threads", json={"thread_id": thread_id, "if_exists": "do_nothing", "metadata": {"b": 2}}
    )
    assert same.status_code == 200 and same.json()["metadata"] == {"a": 1}


async def test_empty_body_creates_a_thread(client: httpx.AsyncClient) -> None:
    response = await client.post("/threads")
    assert response.status_code == 200
    uuid.UUID(response.json()["thread_id"])


async def test_search_count_select_and_sort(client: httpx.AsyncClient) -> None:
    ids = [
        (await _thread(client, metadata={"team": "a" if i < 2 else "b", "i": i}))["thread_id"]
        for i in range(3)
    ]

    found = (await client.post("/threads/search", json={"metadata": {"team": "a"}})).json()
    assert {t["thread_id"] for t in found} == set(ids[:2])

    newest_first = (await client.post("/threads/search", json={})).json()
    assert [t["thread_id"] for t in newest_first] == ids[::-1]
    oldest_first = await client.post("/threads/search", json={"sort_by": "created_at", "sort_order": "asc"})
    assert [t["thread_id"] for t in oldest_first.json()] == ids

    page = await client.post("/threads/search", json={"limit": 1, "offset": 1, "sort_order": "asc"})
    assert [t["thread_id"] for t in page.json()] == [ids[1]]

    selected = await client.post("/threads/search", json={"ids": [ids[0]], "select": ["thread_id", "status"]})
    assert selected.json() == [{"thread_id": ids[0], "status": "idle"}]

    by_status = await client.post("/threads/search", json={"status": "busy"})
    assert by_status.json() == []

    assert (await client.post("/threads/count", json={})).json() == 3
    assert (await client.post("/threads/count", json={"metadata": {"team": "b"}})).json() == 1


async def test_search_and_count_by_values(client: httpx.AsyncClient, worker: Worker) -> None:
    a = await _thread(client)
    b = await _thread(client)
    for thread, n in ((a, 1), (b, 2)):
        wait = await client.post(
            f"/threads/{thread['thread_id']}/runs/wait", json={"assistant_id": "echo", "input": {"n": n}}
        )
        assert wait.status_code == 200
    found = await client.post("/threads/search", json={"values": {"n": 2}})
    assert [t["thread_id"] for t in found.json()] == [b["thread_id"]]
    assert (await client.post("/threads/count", json={"values": {"n": 1}})).json() == 1


async def test_state_of_a_thread_that_never_ran(client: httpx.AsyncClient) -> None:
    thread = await _thread(client)
    state = await client.get(f"/threads/{thread['thread_id']}/state", params={"subgraphs": "false"})
    assert state.status_code == 200
    assert state.json()["values"] == {} and state.json()["checkpoint"] is None
    history = await client.post(f"/threads/{thread['thread_id']}/history", json={"limit": 10})
    assert history.json() == []
    assert (await client.get(f"/threads/{thread['thread_id']}/history")).json() == []


async def test_update_state_needs_a_graph(client: httpx.AsyncClient) -> None:
    thread = await _thread(client)
    response = await client.post(f"/threads/{thread['thread_id']}/state", json={"values": {"a": 1}})
    assert response.status_code == 400  # as the reference server
    assert "has no assigned graph ID" in response.json()["detail"]


async def test_state_update_history_and_checkpoints(
    client: httpx.AsyncClient, runtime: LangGraphRuntime, worker: Worker
) -> None:
    thread = await _thread(client, metadata={"graph_id": "echo"})
    thread_id = thread["thread_id"]
    updated = await client.post(f"/threads/{thread_id}/state", json={"values": {"n": 1}})
    assert updated.status_code == 200
    first = updated.json()["checkpoint"]["checkpoint_id"]
    # A fresh update leaves the first node pending: the thread waits to be continued.
    after = (await client.get(f"/threads/{thread_id}")).json()
    assert after["status"] == "interrupted" and after["values"] == {"n": 1}

    second = await client.post(f"/threads/{thread_id}/state", json={"values": {"n": 2}, "as_node": "echo"})
    assert second.status_code == 200
    assert (await client.get(f"/threads/{thread_id}")).json()["status"] == "idle"

    bad_node = await client.post(f"/threads/{thread_id}/state", json={"values": {}, "as_node": "nope"})
    assert bad_node.status_code == 400 and "nope" in bad_node.json()["detail"]

    state = (await client.get(f"/threads/{thread_id}/state")).json()
    assert state["values"] == {"n": 2}
    at_first = (await client.get(f"/threads/{thread_id}/state/{first}")).json()
    assert at_first["values"] == {"n": 1}
    by_body = await client.post(
        f"/threads/{thread_id}/state/checkpoint",
        json={"checkpoint": {"checkpoint_id": first}, "subgraphs": True},
    )
    assert by_body.json()["values"] == {"n": 1}

    history = (await client.post(f"/threads/{thread_id}/history", json={"limit": 5})).json()
    assert [h["values"] for h in history] == [{"n": 2}, {"n": 1}]
    before = await client.post(
        f"/threads/{thread_id}/history", json={"before": {"checkpoint_id": history[0]["checkpoint_id"]}}
    )
    assert [h["values"] for h in before.json()] == [{"n": 1}]
    limited = await client.get(f"/threads/{thread_id}/history", params={"limit": 1})
    assert len(limited.json()) == 1
    filtered = await client.post(f"/threads/{thread_id}/history", json={"metadata": {"source": "update"}})
    assert len(filtered.json()) == 2


async def test_update_state_on_busy_thread_is_refused(
    client: httpx.AsyncClient, worker: Worker, gates: Gates
) -> None:
    thread = await _thread(client)
    thread_id = thread["thread_id"]
    run = await client.post(
        f"/threads/{thread_id}/runs", json={"assistant_id": "sleepy", "input": {"gate": "g"}}
    )
    assert run.status_code == 200
    response = await client.post(f"/threads/{thread_id}/state", json={"values": {"a": 1}})
    assert response.status_code == 409
    gates.open("g")


async def test_copy_thread_copies_metadata_values_and_state(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    thread = await _thread(client, metadata={"k": "v"})
    thread_id = thread["thread_id"]
    await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 7}})

    copied = await client.post(f"/threads/{thread_id}/copy")
    assert copied.status_code == 200
    copy = copied.json()
    assert copy["thread_id"] != thread_id
    assert copy["metadata"]["k"] == "v" and copy["metadata"]["graph_id"] == "echo"
    assert copy["values"] == {"n": 7, "echoed": True}
    state = (await client.get(f"/threads/{copy['thread_id']}/state")).json()
    assert state["values"] == {"n": 7, "echoed": True}


async def test_delete_thread_deletes_its_state(
    client: httpx.AsyncClient, runtime: LangGraphRuntime, worker: Worker
) -> None:
    thread = await _thread(client)
    thread_id = thread["thread_id"]
    await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 1}})
    assert await checkpoint_ids(runtime, thread_id) != []
    assert (await client.delete(f"/threads/{thread_id}")).status_code == 204
    assert await checkpoint_ids(runtime, thread_id) == []
    assert (await client.get(f"/threads/{thread_id}/state")).status_code == 404


async def test_unknown_threads_are_404(client: httpx.AsyncClient) -> None:
    missing = str(uuid.uuid4())
    for method, path in [
        ("GET", f"/threads/{missing}"),
        ("PATCH", f"/threads/{missing}"),
        ("DELETE", f"/threads/{missing}"),
        ("POST", f"/threads/{missing}/copy"),
        ("GET", f"/threads/{missing}/state"),
        ("POST", f"/threads/{missing}/state"),
        ("GET", f"/threads/{missing}/history"),
        ("POST", f"/threads/{missing}/history"),
        ("GET", f"/threads/{missing}/runs"),
    ]:
        response = await client.request(method, path, json={} if method in ("POST", "PATCH") else None)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"]


async def test_owner_isolation(app, client: httpx.AsyncClient) -> None:
    """Threads of another owner (set by an auth middleware in the scope) are invisible."""

    def as_owner(owner: str) -> httpx.AsyncClient:
        async def with_owner(scope, receive, send):
            scope = {**scope, "runplane.owner": owner}
            await app(scope, receive, send)

        return httpx.AsyncClient(transport=httpx.ASGITransport(app=with_owner), base_url="http://t")

    async with as_owner("alice") as alice, as_owner("bob") as bob:
        thread = await _thread(alice)
        assert (await alice.get(f"/threads/{thread['thread_id']}")).status_code == 200
        assert (await bob.get(f"/threads/{thread['thread_id']}")).status_code == 404
        assert (await bob.post("/threads/count", json={})).json() == 0
        assert (await client.post("/threads/count", json={})).json() == 0
