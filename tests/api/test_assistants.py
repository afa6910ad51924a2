"""`/assistants` over HTTP: CRUD, versions, and what runs take from their assistant."""

from __future__ import annotations

import httpx

from runplane.core.graphs import default_assistant_id
from runplane.worker import Worker


async def test_create_patch_versions_latest(client: httpx.AsyncClient) -> None:
    created = (
        await client.post(
            "/assistants",
            json={
                "graph_id": "echo",
                "config": {"configurable": {"a": 1}},
                "metadata": {"k": "v"},
                "name": "n",
            },
        )
    ).json()
    aid = created["assistant_id"]
    # LangGraph keeps `context` and `config.configurable` equal.
    assert created["context"] == {"a": 1} and created["version"] == 1 and created["name"] == "n"
    patched = (
        await client.patch(f"/assistants/{aid}", json={"context": {"z": 2}, "metadata": {"k2": 1}})
    ).json()
    assert patched["version"] == 2 and patched["config"] == {"configurable": {"z": 2}}
    assert patched["metadata"] == {"k": "v", "k2": 1}
    versions = (await client.post(f"/assistants/{aid}/versions", json={})).json()
    assert [v["version"] for v in versions] == [2, 1] and "updated_at" not in versions[0]
    latest = (await client.post(f"/assistants/{aid}/latest", json={"version": 1})).json()
    assert latest["version"] == 1 and latest["context"] == {"a": 1}
    assert (await client.get(f"/assistants/{aid}")).json() == latest
    assert (await client.post(f"/assistants/{aid}/latest", json={"version": 7})).status_code == 404
    assert (
        await client.post("/assistants", json={"graph_id": "echo", "assistant_id": aid})
    ).status_code == 409
    same = await client.post(
        "/assistants", json={"graph_id": "echo", "assistant_id": aid, "if_exists": "do_nothing"}
    )
    assert same.json() == latest
    assert (await client.post("/assistants", json={"graph_id": "nope"})).status_code == 404
    both = {"graph_id": "echo", "config": {"configurable": {"a": 1}}, "context": {"b": 2}}
    assert (await client.post("/assistants", json=both)).status_code == 400


async def test_system_assistants_by_id_and_name(client: httpx.AsyncClient) -> None:
    by_name = (await client.get("/assistants/echo")).json()
    assert by_name["assistant_id"] == default_assistant_id("echo") == "046b5dc7-2108-582c-9c6c-31d556d138f0"
    assert by_name["metadata"] == {"created_by": "system"}
    assert (await client.get(f"/assistants/{by_name['assistant_id']}")).json() == by_name
    found = (await client.post("/assistants/search", json={"graph_id": "echo"})).json()
    assert [a["assistant_id"] for a in found] == [by_name["assistant_id"]]
    assert (await client.post("/assistants/count", json={"graph_id": "echo"})).json() == 1


async def test_run_merges_assistant_config_and_records_version(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    aid = (
        await client.post(
            "/assistants",
            json={
                "graph_id": "echo",
                "config": {"tags": ["a"], "recursion_limit": 7},
                "context": {"x": 1, "y": 1},
            },
        )
    ).json()["assistant_id"]
    thread_id = (await client.post("/threads", json={})).json()["thread_id"]
    run = (
        await client.post(
            f"/threads/{thread_id}/runs",
            json={"assistant_id": aid, "config": {"tags": ["r"]}, "context": {"y": 2}},
        )
    ).json()
    kwargs = run["kwargs"]
    assert kwargs["config"]["tags"] == ["r"] and kwargs["config"]["recursion_limit"] == 7  # the run's wins
    # The assistant's context mirrored into its configurable (as LangGraph keeps it), beside the
    # ids the server adds to every run's configurable.
    assert kwargs["config"]["configurable"].items() >= {"x": 1, "y": 1}.items()
    assert kwargs["config"]["configurable"]["assistant_id"] == aid
    assert kwargs["context"] == {"x": 1, "y": 2}
    assert kwargs["assistant_version"] == 1
    await client.patch(f"/assistants/{aid}", json={"name": "later"})
    again = (await client.get(f"/threads/{thread_id}/runs/{run['run_id']}")).json()
    assert again["kwargs"]["assistant_version"] == 1


async def test_delete_cancels_active_runs_and_keeps_finished(client: httpx.AsyncClient) -> None:
    """As LangGraph: the assistant and its versions go, its pending runs are cancelled, runs stay."""
    aid = (await client.post("/assistants", json={"graph_id": "echo"})).json()["assistant_id"]
    thread_id = (await client.post("/threads", json={})).json()["thread_id"]
    run = (
        await client.post(f"/threads/{thread_id}/runs", json={"assistant_id": aid, "after_seconds": 600})
    ).json()
    assert (await client.delete(f"/assistants/{aid}")).status_code == 204
    assert (await client.get(f"/assistants/{aid}")).status_code == 404
    assert (await client.post(f"/assistants/{aid}/versions", json={})).status_code == 404
    after = (await client.get(f"/threads/{thread_id}/runs/{run['run_id']}")).json()
    assert after["status"] == "interrupted"
    assert (await client.delete(f"/assistants/{aid}")).status_code == 404


async def test_delete_threads_deletes_the_assistants_threads(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    aid = (await client.post("/assistants", json={"graph_id": "echo"})).json()["assistant_id"]
    thread_id = (await client.post("/threads", json={})).json()["thread_id"]
    other = (await client.post("/threads", json={})).json()["thread_id"]
    await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": aid, "input": {}})
    await client.post(f"/threads/{other}/runs/wait", json={"assistant_id": "echo", "input": {}})
    assert (await client.delete(f"/assistants/{aid}", params={"delete_threads": "true"})).status_code == 204
    assert (await client.get(f"/threads/{thread_id}")).status_code == 404
    assert (await client.get(f"/threads/{other}")).status_code == 200
