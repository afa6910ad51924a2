"""A2A at `/a2a/{assistant_id}` through the official `a2a-sdk` client (its A2A 0.3 JSON-RPC binding,
chosen from the agent card) over real HTTP, plus raw JSON-RPC for the wire shapes and error codes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from a2a.client import Client, ClientConfig, create_client
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import TaskNotCancelableError
from langgraph.checkpoint.memory import InMemorySaver

from runplane.api import ApiSettings, create_app
from runplane.core.graphs import default_assistant_id
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import parse_sse, serve
from tests.e2e.test_sdk_api import GATES, GRAPHS

KEY = {"x-api-key": "key-alice"}
CHAT = default_assistant_id("chat")


@pytest.fixture
async def url() -> AsyncIterator[str]:
    manager: RunManager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))
    runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=2, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(
        manager,
        runtime,
        ApiSettings(api_keys={"key-alice": "alice", "key-bob": "bob"}, heartbeat_seconds=0.2),
    )
    try:
        async with serve(app) as base:
            yield base
    finally:
        await worker.stop()


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=30) as client:
        yield client


async def a2a_client(http: httpx.AsyncClient, url: str, assistant_id: str, streaming: bool) -> Client:
    return await create_client(
        f"{url}/a2a/{assistant_id}", ClientConfig(httpx_client=http, streaming=streaming)
    )


def user_message(text: str, **fields: Any) -> pb.Message:
    return pb.Message(message_id=str(uuid.uuid4()), role=pb.ROLE_USER, parts=[pb.Part(text=text)], **fields)


async def send(client: Client, message: pb.Message) -> list[pb.StreamResponse]:
    return [event async for event in client.send_message(pb.SendMessageRequest(message=message))]


async def test_the_agent_card_is_served_per_assistant(http: httpx.AsyncClient, url: str) -> None:
    card = (await http.get(f"/a2a/{CHAT}/.well-known/agent-card.json")).json()
    assert card["name"] == "chat"
    assert card["url"] == f"{url}/a2a/{CHAT}"
    assert card["capabilities"]["streaming"] is True
    assert card["skills"][0]["id"] == f"{CHAT}-main"
    assert (await http.get(f"/a2a/{CHAT}")).json() == card
    assert (await http.get("/a2a/nope/.well-known/agent-card.json")).status_code == 404


async def test_message_send_runs_the_assistant_and_answers_a_completed_task(
    http: httpx.AsyncClient, url: str
) -> None:
    client = await a2a_client(http, url, CHAT, streaming=False)
    [response] = await send(client, user_message("hello"))
    task = response.task
    assert task.status.state == pb.TASK_STATE_COMPLETED
    context_id, run_id = task.id.split(":")
    assert task.context_id == context_id
    [artifact] = task.artifacts
    assert artifact.name == "Assistant Response"
    assert [p.text for p in artifact.parts] == ["You said: hello"]
    assert [(m.role, m.parts[0].text) for m in task.history] == [
        (pb.ROLE_USER, "hello"),
        (pb.ROLE_AGENT, "You said: hello"),
    ]
    # The context is a thread of the caller's, the task a run on it.
    run = (await http.get(f"/threads/{context_id}/runs/{run_id}")).json()
    assert run["status"] == "success"

    # The same context continues the conversation.
    [again] = await send(client, user_message("more", context_id=context_id))
    assert again.task.context_id == context_id
    assert again.task.id != task.id
    assert [p.text for p in again.task.artifacts[0].parts] == ["You said: more"]
    assert len(again.task.history) == 4

    fetched = await client.get_task(pb.GetTaskRequest(id=task.id))
    assert fetched.status.state == pb.TASK_STATE_COMPLETED
    assert fetched.id == task.id


async def test_message_stream_announces_the_task_then_its_result(http: httpx.AsyncClient, url: str) -> None:
    client = await a2a_client(http, url, CHAT, streaming=True)
    events = await send(client, user_message("stream me"))
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert events[0].task.status.state == pb.TASK_STATE_SUBMITTED
    assert kinds[-2:] == ["artifact_update", "status_update"]
    assert [p.text for p in events[-2].artifact_update.artifact.parts] == ["You said: stream me"]
    assert events[-1].status_update.status.state == pb.TASK_STATE_COMPLETED
    assert {e.status_update.status.state for e in events if e.HasField("status_update")} >= {
        pb.TASK_STATE_WORKING,
        pb.TASK_STATE_COMPLETED,
    }


async def test_an_interrupt_asks_for_input_and_the_next_message_resumes_the_task(
    http: httpx.AsyncClient, url: str
) -> None:
    client = await a2a_client(http, url, default_assistant_id("hitl"), streaming=False)
    [asked] = await send(client, user_message("start"))
    task = asked.task
    assert task.status.state == pb.TASK_STATE_INPUT_REQUIRED
    [artifact] = task.artifacts
    assert artifact.name == "Interrupt"
    assert artifact.parts[0].data.struct_value["value"]["question"] == "Proceed?"

    [answered] = await send(client, user_message("yes", task_id=task.id, context_id=task.context_id))
    assert answered.task.id == task.id
    assert answered.task.status.state == pb.TASK_STATE_COMPLETED
    state = (await http.get(f"/threads/{task.context_id}/state")).json()
    assert state["values"]["answer"] == "yes"
    assert state["values"]["confirmed"] is True
    assert (await client.get_task(pb.GetTaskRequest(id=task.id))).status.state == pb.TASK_STATE_COMPLETED


async def test_tasks_cancel_stops_a_running_task(http: httpx.AsyncClient, url: str) -> None:
    gate = f"a2a-{uuid.uuid4()}"
    GATES[gate] = asyncio.Event()
    rpc = {"jsonrpc": "2.0", "id": "s", "method": "message/stream"}
    message = {"role": "user", "messageId": "m1", "parts": [{"kind": "data", "data": {"n": 3, "gate": gate}}]}
    ticker = default_assistant_id("ticker")
    async with http.stream(
        "POST",
        f"/a2a/{ticker}",
        json={**rpc, "params": {"message": message}},
        headers={"accept": "text/event-stream"},
    ) as stream:
        chunks = stream.aiter_text()
        first = parse_sse(await anext(chunks))[0].data
        task_id = first["result"]["id"]
        assert first["result"]["status"]["state"] == "submitted"
        client = await a2a_client(http, url, ticker, streaming=False)
        cancelled = await client.cancel_task(pb.CancelTaskRequest(id=task_id))
        assert cancelled.status.state == pb.TASK_STATE_CANCELED
        rest = parse_sse("".join([chunk async for chunk in chunks]))
    assert rest[-1].data["result"]["final"] is True
    assert rest[-1].data["result"]["status"]["state"] == "canceled"
    context_id, run_id = task_id.split(":")
    assert (await http.get(f"/threads/{context_id}/runs/{run_id}")).json()["status"] == "interrupted"
    # A finished task cannot be cancelled again.
    with pytest.raises(TaskNotCancelableError, match="not cancelable"):
        await client.cancel_task(pb.CancelTaskRequest(id=task_id))


async def rpc(http: httpx.AsyncClient, method: str, params: Any, **extra: Any) -> Any:
    body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params, **extra}
    response = await http.post(f"/a2a/{CHAT}", json=body, headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_json_rpc_errors_use_the_spec_codes(http: httpx.AsyncClient) -> None:
    assert (await rpc(http, "tasks/get", {"id": "nope"}))["error"] == {
        "code": -32001,
        "message": "Task not found: nope",
    }
    unknown_task = f"{uuid.uuid4()}:{uuid.uuid4()}"
    assert (await rpc(http, "tasks/get", {"id": unknown_task}))["error"]["code"] == -32001
    assert (await rpc(http, "tasks/list", {}))["error"] == {
        "code": -32601,
        "message": "Method not found: tasks/list",
    }
    assert (await rpc(http, "message/send", {"message": {"role": "user"}}))["error"]["code"] == -32602
    bad = await http.post(f"/a2a/{CHAT}", content=b"{not json", headers={"accept": "application/json"})
    assert bad.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "Invalid JSON payload"},
    }
    assert (await rpc(http, "tasks/get", {"id": "x"}, jsonrpc="1.0"))["error"]["code"] == -32600


async def test_another_users_task_does_not_exist_for_them(http: httpx.AsyncClient, url: str) -> None:
    sent = await rpc(
        http,
        "message/send",
        {"message": {"role": "user", "messageId": "m", "parts": [{"kind": "text", "text": "hi"}]}},
    )
    task_id = sent["result"]["id"]
    assert sent["result"]["status"]["state"] == "completed"
    assert (await rpc(http, "tasks/get", {"id": task_id}))["result"]["id"] == task_id
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": "key-bob"}) as bob:
        assert (await rpc(bob, "tasks/get", {"id": task_id}))["error"] == {
            "code": -32001,
            "message": f"Task not found: {task_id}",
        }
        assert (await rpc(bob, "tasks/cancel", {"id": task_id}))["error"]["code"] == -32001
        resumed = await rpc(
            bob,
            "message/send",
            {
                "message": {
                    "role": "user",
                    "messageId": "m2",
                    "taskId": task_id,
                    "parts": [{"kind": "text", "text": "hijack"}],
                }
            },
        )
        assert resumed["error"]["code"] == -32001
        # Nor can Bob write into Alice's context.
        context_id = task_id.split(":")[0]
        foreign = await rpc(
            bob,
            "message/send",
            {
                "message": {
                    "role": "user",
                    "messageId": "m3",
                    "contextId": context_id,
                    "parts": [{"kind": "text", "text": "hijack"}],
                }
            },
        )
        assert foreign["error"] == {"code": -32602, "message": f"thread {context_id} not found"}
    state = (await http.get(f"/threads/{context_id}/state")).json()
    assert "hijack" not in str(state)
    async with httpx.AsyncClient(base_url=url) as anonymous:
        assert (await anonymous.post(f"/a2a/{CHAT}", json={})).status_code == 401
