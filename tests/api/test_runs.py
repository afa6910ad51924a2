"""Run endpoints in-process: create, wait, join, cancel, multitask, stateless and batch runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from runplane.core.graphs import default_assistant_id
from runplane.core.manager import RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.worker import Worker
from tests.api._support import checkpoint_ids, ended
from tests.api.conftest import api_worker
from tests.api.graphs import Gates


async def _thread(client: httpx.AsyncClient) -> str:
    return str((await client.post("/threads", json={})).json()["thread_id"])


async def _run(client: httpx.AsyncClient, thread_id: str, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/threads/{thread_id}/runs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_background_run_lifecycle(client: httpx.AsyncClient, worker: Worker) -> None:
    thread_id = await _thread(client)
    response = await client.post(
        f"/threads/{thread_id}/runs",
        json={"assistant_id": "echo", "input": {"n": 1}, "metadata": {"mk": "mv"}, "config": {"tags": ["t"]}},
    )
    assert response.status_code == 200
    run = response.json()
    assert response.headers["content-location"] == f"/threads/{thread_id}/runs/{run['run_id']}"
    assert run["assistant_id"] == default_assistant_id("echo")
    assert run["thread_id"] == thread_id
    assert run["multitask_strategy"] == "enqueue"
    assert run["metadata"]["mk"] == "mv" and run["metadata"]["graph_id"] == "echo"
    assert run["kwargs"]["input"] == {"n": 1}
    config = run["kwargs"]["config"]
    assert config["tags"] == ["t"]
    # As on the reference server: the ids the run executes with, and its metadata.
    assert config["configurable"] == {
        "run_id": run["run_id"],
        "thread_id": thread_id,
        "graph_id": "echo",
        "assistant_id": default_assistant_id("echo"),
        "user_id": "",
    }
    assert config["metadata"]["mk"] == "mv" and config["metadata"]["graph_id"] == "echo"
    assert run["kwargs"]["checkpoint_during"] is True
    assert run["kwargs"]["stream_mode"] == ["values"]

    joined = await client.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
    assert joined.status_code == 200
    assert joined.json() == {"n": 1, "echoed": True}
    assert joined.headers["location"].endswith(f"/runs/{run['run_id']}/join")

    got = (await client.get(f"/threads/{thread_id}/runs/{run['run_id']}")).json()
    assert got["status"] == "success"
    thread = (await client.get(f"/threads/{thread_id}")).json()
    assert thread["status"] == "idle"
    assert thread["metadata"] == {"graph_id": "echo", "assistant_id": default_assistant_id("echo")}

    listed = await client.get(f"/threads/{thread_id}/runs", params={"limit": 10, "offset": 0})
    assert [r["run_id"] for r in listed.json()] == [run["run_id"]]
    selected = await client.get(
        f"/threads/{thread_id}/runs", params=[("select", "run_id"), ("select", "status")]
    )
    assert selected.json() == [{"run_id": run["run_id"], "status": "success"}]
    by_status = await client.get(f"/threads/{thread_id}/runs", params={"status": "running"})
    assert by_status.json() == []

    assert (await client.delete(f"/threads/{thread_id}/runs/{run['run_id']}")).status_code == 204
    assert (await client.get(f"/threads/{thread_id}/runs/{run['run_id']}")).status_code == 404


async def test_wait_bodies_success_error_interrupt_and_resume(
    client: httpx.AsyncClient, worker: Worker
) -> None:
    thread_id = await _thread(client)
    ok = await client.post(
        f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 5}}
    )
    assert ok.status_code == 200 and ok.json() == {"n": 5, "echoed": True}
    assert ok.headers["content-location"].startswith(f"/threads/{thread_id}/runs/")

    failed_thread = await _thread(client)
    failed = await client.post(
        f"/threads/{failed_thread}/runs/wait", json={"assistant_id": "failer", "input": {}}
    )
    assert failed.status_code == 200
    assert failed.json() == {"__error__": {"error": "ValueError", "message": "boom!"}}
    assert (await client.get(f"/threads/{failed_thread}")).json()["status"] == "error"

    ask_thread = await _thread(client)
    asked = await client.post(
        f"/threads/{ask_thread}/runs/wait", json={"assistant_id": "asker", "input": {"q": "name?"}}
    )
    body = asked.json()
    [interrupt] = body.pop("__interrupt__")
    assert body == {"q": "name?"}
    assert interrupt == {"value": {"question": "name?"}, "id": interrupt["id"], "response_schema": None}
    thread = (await client.get(f"/threads/{ask_thread}")).json()
    assert thread["status"] == "interrupted"
    # Keyed by the interrupted task, as on the reference server; the interrupt's id is LangGraph's.
    [task] = (await client.get(f"/threads/{ask_thread}/state")).json()["tasks"]
    assert task["name"] == "ask"
    assert thread["interrupts"] == {task["id"]: [{"value": {"question": "name?"}, "id": interrupt["id"]}]}

    resumed = await client.post(
        f"/threads/{ask_thread}/runs/wait", json={"assistant_id": "asker", "command": {"resume": "bob"}}
    )
    assert resumed.json() == {"q": "name?", "answer": "bob"}
    assert (await client.get(f"/threads/{ask_thread}")).json()["status"] == "idle"


async def test_interrupt_before_then_continue(client: httpx.AsyncClient, worker: Worker) -> None:
    thread_id = await _thread(client)
    stopped = await client.post(
        f"/threads/{thread_id}/runs/wait",
        json={"assistant_id": "echo", "input": {"n": 4}, "interrupt_before": ["echo"]},
    )
    assert stopped.json() == {"n": 4}
    assert (await client.get(f"/threads/{thread_id}")).json()["status"] == "interrupted"
    continued = await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo"})
    assert continued.json() == {"n": 4, "echoed": True}


async def test_reject_on_busy_thread_and_if_not_exists(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    first = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "reject"})
    for suffix in ("", "/stream", "/wait"):
        busy = await client.post(
            f"/threads/{thread_id}/runs{suffix}",
            json={"assistant_id": "echo", "multitask_strategy": "reject"},
        )
        assert busy.status_code == 409, suffix
    gates.open("reject")
    assert await ended(manager, first["run_id"]) == "success"

    missing = str(uuid.uuid4())
    refused = await client.post(f"/threads/{missing}/runs", json={"assistant_id": "echo"})
    assert refused.status_code == 404
    created = await client.post(
        f"/threads/{missing}/runs/wait",
        json={"assistant_id": "echo", "input": {"n": 1}, "if_not_exists": "create"},
    )
    assert created.status_code == 200 and created.json() == {"n": 1, "echoed": True}
    assert (await client.get(f"/threads/{missing}")).json()["metadata"]["graph_id"] == "echo"


@pytest.mark.parametrize("strategy", ["interrupt", "rollback", "enqueue"])
async def test_multitask_strategies(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, strategy: str, gates: Gates
) -> None:
    thread_id = await _thread(client)
    first = await _run(client, thread_id, assistant_id="sleepy", input={"gate": f"mt-{strategy}"})
    await gates.entered(f"mt-{strategy}")
    second = await _run(client, thread_id, assistant_id="echo", input={"n": 2}, multitask_strategy=strategy)
    assert second["multitask_strategy"] == strategy
    if strategy == "enqueue":
        gates.open(f"mt-{strategy}")
    joined = await client.get(f"/threads/{thread_id}/runs/{second['run_id']}/join")
    assert joined.json()["echoed"] is True
    runs = (await client.get(f"/threads/{thread_id}/runs")).json()
    statuses = {r["run_id"]: r["status"] for r in runs}
    if strategy == "rollback":
        assert statuses == {second["run_id"]: "success"}
    else:
        expected = "interrupted" if strategy == "interrupt" else "success"
        assert statuses == {second["run_id"]: "success", first["run_id"]: expected}
    assert (await client.get(f"/threads/{thread_id}")).json()["status"] == "idle"


async def test_cancel_without_wait_reports_the_run_as_it_is(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    run = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "cancel"})
    await gates.entered("cancel")
    cancelled = await client.post(
        f"/threads/{thread_id}/runs/{run['run_id']}/cancel", params={"wait": 0, "action": "interrupt"}
    )
    # As the reference server: 202 and no body.
    assert cancelled.status_code == 202 and cancelled.content == b""
    assert await ended(manager, run["run_id"]) == "interrupted"
    again = await client.post(f"/threads/{thread_id}/runs/{run['run_id']}/cancel")
    assert again.status_code == 202 and again.content == b""


async def test_cancel_with_wait_returns_the_stopped_run(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    run = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "cancel-wait"})
    await gates.entered("cancel-wait")
    cancelled = await client.post(
        f"/threads/{thread_id}/runs/{run['run_id']}/cancel", params={"wait": 1, "action": "interrupt"}
    )
    # As the reference server: 200 once stopped, with the run's output (a join's body) and headers.
    assert cancelled.status_code == 200 and cancelled.json() == {"gate": "cancel-wait"}
    assert cancelled.headers["location"] == f"/threads/{thread_id}/runs/{run['run_id']}/join"
    assert (await manager.get_run(run["run_id"])).status == "interrupted"
    thread = (await client.get(f"/threads/{thread_id}")).json()
    assert thread["status"] != "busy"
    joined = await client.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
    assert joined.json() == {"gate": "cancel-wait"}


@pytest.mark.parametrize("wait", [0, 1])
async def test_rollback_cancel_never_leaves_the_thread_busy(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, wait: int, gates: Gates
) -> None:
    thread_id = await _thread(client)
    await client.post(f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 1}})
    run = await _run(client, thread_id, assistant_id="sleepy", input={"gate": f"rb-{wait}"})
    await gates.entered(f"rb-{wait}")
    cancelled = await client.post(
        f"/threads/{thread_id}/runs/{run['run_id']}/cancel", params={"wait": wait, "action": "rollback"}
    )
    assert cancelled.status_code == (200 if wait else 202)
    assert await ended(manager, run["run_id"]) is None  # rolled back: deleted
    thread = (await client.get(f"/threads/{thread_id}")).json()
    assert thread["status"] == "idle"
    assert thread["values"] == {"n": 1, "echoed": True}


async def test_cancel_pending_run_and_delete_running_run(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    thread_id = await _thread(client)
    first = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "pending"})
    second = await _run(client, thread_id, assistant_id="echo")
    await gates.entered("pending")
    cancelled = await client.post(f"/threads/{thread_id}/runs/{second['run_id']}/cancel")
    assert cancelled.status_code == 202
    assert (await manager.get_run(second["run_id"])).status == "interrupted"

    # As the reference server: 204, then the run is gone. Unlike it, the run was stopped first and
    # its thread is free: nothing executes for a run that no longer exists.
    deleted = await client.delete(f"/threads/{thread_id}/runs/{first['run_id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/threads/{thread_id}/runs/{first['run_id']}")).status_code == 404
    assert (await client.get(f"/threads/{thread_id}")).json()["status"] != "busy"
    after = await client.post(
        f"/threads/{thread_id}/runs/wait", json={"assistant_id": "echo", "input": {"n": 2}}
    )
    assert after.json()["n"] == 2 and after.json()["echoed"] is True  # the thread runs again


async def test_bulk_cancel(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    a, b = await _thread(client), await _thread(client)
    run_a = await _run(client, a, assistant_id="sleepy", input={"gate": "bulk-a"})
    run_b = await _run(client, b, assistant_id="sleepy", input={"gate": "bulk-b"})
    pending = await _run(client, b, assistant_id="echo")
    await gates.entered("bulk-b")

    by_ids = await client.post(
        "/runs/cancel", params={"action": "interrupt"}, json={"thread_id": a, "run_ids": [run_a["run_id"]]}
    )
    assert by_ids.status_code == 204
    assert await ended(manager, run_a["run_id"]) == "interrupted"

    only_pending = await client.post("/runs/cancel", json={"status": "pending"})
    assert only_pending.status_code == 204
    assert await ended(manager, pending["run_id"]) == "interrupted"
    assert (await manager.get_run(run_b["run_id"])).status == "running"

    everything = await client.post("/runs/cancel", json={"status": "all"})
    assert everything.status_code == 204
    assert await ended(manager, run_b["run_id"]) == "interrupted"

    nothing = await client.post("/runs/cancel", json={"status": "running"})
    assert nothing.status_code == 404
    unknown = await client.post("/runs/cancel", json={"thread_id": a, "run_ids": [str(uuid.uuid4())]})
    assert unknown.status_code == 404
    within = await client.post("/runs/cancel", json={"status": "all", "thread_id": a})
    assert within.status_code == 404  # the thread has no active run left
    bad_bodies: tuple[dict[str, Any], ...] = (
        {},
        {"status": "all", "thread_id": a, "run_ids": [run_a["run_id"]]},
        {"thread_id": a},
        {"status": "bogus"},
        {"status": None},
        {"thread_id": a, "run_ids": []},
        {"thread_id": a, "run_ids": [run_a["run_id"]], "status": None},
    )
    for bad in bad_bodies:
        assert (await client.post("/runs/cancel", json=bad)).status_code == 422, bad


async def test_stateless_runs(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, runtime: LangGraphRuntime
) -> None:
    waited = await client.post("/runs/wait", json={"assistant_id": "echo", "input": {"n": 9}})
    assert waited.status_code == 200 and waited.json() == {"n": 9, "echoed": True}
    location = waited.headers["location"]
    assert location.startswith("/threads/") and location.endswith("/join")
    temp_thread = location.split("/")[2]
    await worker.run_until_idle()
    assert (await client.get(f"/threads/{temp_thread}")).status_code == 404
    assert await checkpoint_ids(runtime, temp_thread) == []

    failed = await client.post("/runs/wait", json={"assistant_id": "failer", "input": {}})
    assert failed.json() == {"__error__": {"error": "ValueError", "message": "boom!"}}

    kept = await client.post(
        "/runs/wait", json={"assistant_id": "echo", "input": {"n": 3}, "on_completion": "keep"}
    )
    kept_thread = kept.headers["location"].split("/")[2]
    await worker.run_until_idle()
    thread = (await client.get(f"/threads/{kept_thread}")).json()
    assert thread["values"] == {"n": 3, "echoed": True} and thread["status"] == "idle"

    background = await client.post("/runs", json={"assistant_id": "echo", "input": {"n": 1}})
    run = background.json()
    assert background.headers["content-location"] == f"/runs/{run['run_id']}"
    assert run["kwargs"]["temporary"] is True
    await ended(manager, run["run_id"])  # its end, or its deletion with its temporary thread
    await worker.run_until_idle()  # the worker deletes the temporary thread once the run has ended
    assert (await client.get(f"/threads/{run['thread_id']}")).status_code == 404


async def test_batch(client: httpx.AsyncClient, worker: Worker) -> None:
    created = await client.post(
        "/runs/batch", json=[{"assistant_id": "echo", "input": {"n": i}} for i in range(3)]
    )
    assert created.status_code == 200
    runs = created.json()
    assert len({r["thread_id"] for r in runs}) == 3
    assert all(r["kwargs"]["temporary"] for r in runs)
    assert (await client.post("/runs/batch", json=[])).status_code == 422
    unknown = await client.post("/runs/batch", json=[{"assistant_id": "echo"}, {"assistant_id": "nope"}])
    assert unknown.status_code == 404


async def test_unknown_runs_and_assistants(client: httpx.AsyncClient) -> None:
    thread_id = await _thread(client)
    missing = str(uuid.uuid4())
    for method, path in [
        ("GET", f"/threads/{thread_id}/runs/{missing}"),
        ("DELETE", f"/threads/{thread_id}/runs/{missing}"),
        ("POST", f"/threads/{thread_id}/runs/{missing}/cancel"),
        ("GET", f"/threads/{thread_id}/runs/{missing}/join"),
        ("GET", f"/threads/{thread_id}/runs/{missing}/stream"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)
    for path in (f"/threads/{thread_id}/runs", "/runs", "/runs/wait", "/runs/stream"):
        response = await client.post(path, json={"assistant_id": "nope"})
        assert response.status_code == 404, path
        response = await client.post(path, json={"assistant_id": str(uuid.uuid4())})
        assert response.status_code == 404, path


async def test_join_outlasts_the_wait_fallback(
    client: httpx.AsyncClient, worker: Worker, manager: RunManager, gates: Gates
) -> None:
    """A join longer than `wait_fallback_seconds` (0.2 s here) keeps waiting for the end."""
    thread_id = await _thread(client)
    run = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "long"})

    async def release() -> None:
        await asyncio.sleep(0.5)
        gates.open("long")

    releaser = asyncio.create_task(release())
    joined = await client.get(f"/threads/{thread_id}/runs/{run['run_id']}/join")
    await releaser
    assert joined.json() == {"gate": "long", "slept": True}


async def test_delete_of_a_run_that_starts_meanwhile_stops_it_first(
    client: httpx.AsyncClient, manager: RunManager, runtime: LangGraphRuntime
) -> None:
    """The run is pending when DELETE arrives and a worker claims it before the delete lands: it is
    stopped like any running run, never left executing without its record."""
    # Not started: it claims only when told to, so the race is staged exactly.
    worker = api_worker(manager, runtime)
    thread_id = await _thread(client)
    run = await _run(client, thread_id, assistant_id="sleepy", input={"gate": "claimed-meanwhile"})
    store_delete = manager.store.delete_run
    raced = False

    async def claimed_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal raced
        if not raced:
            raced = True
            assert await worker._claim_one()  # the worker wins: the run is running now
        return await store_delete(*args, **kwargs)

    manager.store.delete_run = claimed_first  # type: ignore[method-assign]
    try:
        deleted = await client.delete(f"/threads/{thread_id}/runs/{run['run_id']}")
        assert raced and deleted.status_code == 204
        async with asyncio.timeout(5):  # its execution has ended: nothing runs for the deleted run
            await worker.run_until_idle()
    finally:
        await worker.stop()
    assert (await client.get(f"/threads/{thread_id}/runs/{run['run_id']}")).status_code == 404
    assert (await client.get(f"/threads/{thread_id}")).json()["status"] != "busy"
