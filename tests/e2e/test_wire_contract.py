"""Where LangGraph's server has an observable contract, runplane matches it: checked with the official
`langgraph-sdk` (and raw HTTP where the SDK hides what is on the wire) over a real loopback socket.

Each test names the reference server's behaviour it pins (langgraph-api 0.16.7, checked against a
running one); the README's "Compatibility notes" list where runplane departs on purpose.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import BadRequestError, NotFoundError
from langgraph_sdk.schema import Config

from runplane.api import ApiSettings, create_app
from runplane.core.graphs import default_assistant_id
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import parse_sse, serve
from tests.e2e.test_sdk_api import GATES, GRAPHS


@dataclass
class Server:
    sdk: LangGraphClient
    http: httpx.AsyncClient
    manager: RunManager


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))
    runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=4, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.2))
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
            sdk = get_client(url=url, api_key=None)
            try:
                yield Server(sdk, http, manager)
            finally:
                await sdk.aclose()
    finally:
        await worker.stop()


async def _status(sdk: LangGraphClient, thread_id: str, run_id: str, wanted: str) -> None:
    for _ in range(500):
        if (await sdk.runs.get(thread_id, run_id))["status"] == wanted:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {wanted}")


def _gate() -> str:
    name = f"wire-{uuid.uuid4()}"
    GATES[name] = asyncio.Event()
    return name


# -- stream_mode="messages" --------------------------------------------------------------------------


async def test_messages_partial_carries_the_whole_message_so_far(server: Server) -> None:
    """Reference: each `messages/partial` is the message so far (clients replace it with each one)."""
    sdk = server.sdk
    thread_id = (await sdk.threads.create())["thread_id"]
    words = "alpha beta gamma delta"
    ask: dict[str, Any] = {"messages": [{"role": "user", "content": words}]}
    parts = [
        p
        async for p in sdk.runs.stream(
            thread_id,
            "chat",
            input=ask,
            stream_mode="messages",
        )
    ]
    partials = [p.data[0] for p in parts if p.event == "messages/partial"]
    texts = [m["content"] for m in partials]
    assert len(texts) >= 4
    assert all(later.startswith(earlier) and later != earlier for earlier, later in itertools.pairwise(texts))
    state_values = (await sdk.threads.get_state(thread_id))["values"]
    assert isinstance(state_values, dict)
    final = state_values["messages"][-1]
    assert texts[-1] == final["content"] and {m["id"] for m in partials} == {final["id"]}
    assert {m["type"] for m in partials} == {"ai"}

    # `messages-tuple` stays linear: one chunk per event, adding up to the message.
    tuples = [
        p.data
        async for p in sdk.runs.stream(
            thread_id,
            "chat",
            input=ask,
            stream_mode="messages-tuple",
        )
        if p.event == "messages"
    ]
    chunks = [chunk["content"] for chunk, _metadata in tuples]
    assert "".join(chunks) == texts[-1] and max(map(len, chunks)) < len(texts[-1])


# -- join_stream ---------------------------------------------------------------------------------------


async def test_join_stream_without_last_event_id_streams_from_now_on(server: Server) -> None:
    """Reference: without Last-Event-ID a join hears only what happens next; `-1` replays it all."""
    sdk, http = server.sdk, server.http
    thread_id = (await sdk.threads.create())["thread_id"]
    done = await sdk.runs.create(thread_id, "echo", input={"n": 1})
    await sdk.runs.join(thread_id, done["run_id"])
    assert [p async for p in sdk.runs.join_stream(thread_id, done["run_id"])] == []
    replayed = [p.event async for p in sdk.runs.join_stream(thread_id, done["run_id"], last_event_id="-1")]
    assert replayed == ["metadata", "values", "values"]

    gate = _gate()
    run = await sdk.runs.create(thread_id, "ticker", input={"n": 3, "gate": gate}, stream_mode="custom")
    async for part in sdk.runs.join_stream(thread_id, run["run_id"], last_event_id="-1"):
        if part.event == "custom":
            break  # the run is past its first tick, waiting at the gate
    async with http.stream("GET", f"/threads/{thread_id}/runs/{run['run_id']}/stream") as response:
        GATES[gate].set()  # the join is in place: its response has begun
        events = parse_sse((await response.aread()).decode())
    assert [(e.event, e.data) for e in events] == [("custom", {"i": 1}), ("custom", {"i": 2})]


async def test_join_stream_of_a_pending_run_starts_at_its_metadata_event(server: Server) -> None:
    sdk, http = server.sdk, server.http
    thread_id = (await sdk.threads.create())["thread_id"]
    gate = _gate()
    blocker = await sdk.runs.create(thread_id, "ticker", input={"n": 1, "gate": gate})
    await _status(sdk, thread_id, blocker["run_id"], "running")
    queued = await sdk.runs.create(thread_id, "ticker", input={"n": 2}, stream_mode="custom")
    async with http.stream("GET", f"/threads/{thread_id}/runs/{queued['run_id']}/stream") as response:
        assert (await sdk.runs.get(thread_id, queued["run_id"]))["status"] == "pending"
        GATES[gate].set()
        events = parse_sse((await response.aread()).decode())
    assert [e.event for e in events] == ["metadata", "custom", "custom"]
    assert events[0].data["run_id"] == queued["run_id"]


# -- DELETE of a running run ---------------------------------------------------------------------------


async def test_delete_of_a_running_run_stops_it_and_frees_its_thread(server: Server) -> None:
    """Reference: 204, then 404. Unlike it, the run stops and the thread is free (see the README)."""
    sdk = server.sdk
    thread_id = (await sdk.threads.create())["thread_id"]
    run = await sdk.runs.create(thread_id, "slow", input={"steps": 200, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    await sdk.runs.delete(thread_id, run["run_id"])
    with pytest.raises(NotFoundError):
        await sdk.runs.get(thread_id, run["run_id"])
    assert (await sdk.threads.get(thread_id))["status"] != "busy"
    # Nothing runs on the thread any more: a run that refuses company is admitted at once.
    after = await sdk.runs.wait(thread_id, "echo", input={"n": 4}, multitask_strategy="reject")
    assert isinstance(after, dict) and after["n"] == 4


# -- thread, run and state shapes ----------------------------------------------------------------------


async def test_thread_carries_error_and_the_runs_config(server: Server) -> None:
    sdk = server.sdk
    thread_id = (await sdk.threads.create())["thread_id"]
    # The SDK's Thread omits `config` and `error`, which LangGraph's server sends.
    fresh: dict[str, Any] = dict(await sdk.threads.get(thread_id))
    assert fresh["config"] == {} and fresh["error"] is None
    await sdk.runs.wait(thread_id, "failer", input={"x": 1}, raise_error=False)
    failed: dict[str, Any] = dict(await sdk.threads.get(thread_id))
    assert failed["status"] == "error"
    assert failed["error"] == {"error": "ValueError", "message": "boom!"}

    config: Config = {"tags": ["t1"], "recursion_limit": 7, "configurable": {"foo": "bar"}}
    run = await sdk.runs.create(thread_id, "echo", input={"n": 1}, config=config)
    await sdk.runs.join(thread_id, run["run_id"])
    thread: dict[str, Any] = dict(await sdk.threads.get(thread_id))
    assert thread["error"] is None and thread["status"] == "idle"
    # As the reference keeps it: the run's keys, but its configurable stays the run's own.
    assert thread["config"] == {"tags": ["t1"], "recursion_limit": 7, "configurable": {}}

    kwargs = (await sdk.runs.get(thread_id, run["run_id"]))["kwargs"]  # type: ignore[typeddict-item]
    assert kwargs["checkpoint_during"] is True
    assert kwargs["config"]["configurable"] == {
        "foo": "bar",
        "run_id": run["run_id"],
        "thread_id": thread_id,
        "graph_id": "echo",
        "assistant_id": default_assistant_id("echo"),
        "user_id": "",
    }
    assert kwargs["config"]["metadata"]["graph_id"] == "echo"
    assert kwargs["config"]["metadata"]["assistant_id"] == default_assistant_id("echo")


async def test_update_state_answers_checkpoint_checkpoint_id_and_configurable(server: Server) -> None:
    sdk = server.sdk
    thread_id = (await sdk.threads.create(graph_id="echo"))["thread_id"]
    update = await sdk.threads.update_state(thread_id, {"n": 2}, as_node="echo")
    checkpoint = update["checkpoint"]
    assert checkpoint["thread_id"] == thread_id and checkpoint["checkpoint_ns"] == ""
    assert update["checkpoint_id"] == checkpoint["checkpoint_id"]  # type: ignore[typeddict-item]
    assert update["configurable"] == checkpoint  # type: ignore[typeddict-item]


async def test_create_thread_applies_supersteps(server: Server) -> None:
    sdk = server.sdk
    thread = await sdk.threads.create(
        graph_id="echo",
        supersteps=[
            {"updates": [{"values": {"n": 1}, "as_node": "echo"}]},
            {"updates": [{"values": {"n": 5}, "as_node": "echo"}]},
        ],
    )
    assert thread["values"] == {"n": 5} and thread["status"] == "idle"
    history = await sdk.threads.get_history(thread["thread_id"])
    assert [h["values"].get("n") for h in history if isinstance(h["values"], dict)][:2] == [5, 1]

    # Without a graph there is nothing to apply them to: refused, and no thread is left behind.
    before = await sdk.threads.count()
    with pytest.raises(BadRequestError):
        await sdk.threads.create(supersteps=[{"updates": [{"values": {"n": 1}, "as_node": "echo"}]}])
    with pytest.raises(BadRequestError):
        await sdk.threads.create(
            graph_id="echo", supersteps=[{"updates": [{"values": {}, "as_node": "nope"}]}]
        )
    assert await sdk.threads.count() == before


async def test_state_updates_the_reference_refuses_with_400(server: Server) -> None:
    sdk = server.sdk
    no_graph = (await sdk.threads.create())["thread_id"]
    with pytest.raises(BadRequestError, match="no assigned graph ID"):
        await sdk.threads.update_state(no_graph, {"n": 1})
    echo_thread = (await sdk.threads.create(graph_id="echo"))["thread_id"]
    with pytest.raises(BadRequestError):
        await sdk.threads.update_state(echo_thread, [{"n": 1}])
    with pytest.raises(BadRequestError):
        await sdk.threads.update_state(echo_thread, {"n": 1}, as_node="nope")


async def test_stateless_stream_location_and_cancel_replies(server: Server) -> None:
    sdk, http = server.sdk, server.http
    async with http.stream(
        "POST", "/runs/stream", json={"assistant_id": "echo", "input": {"n": 1}}
    ) as response:
        body = (await response.aread()).decode()
    run_id = parse_sse(body)[0].data["run_id"]
    assert response.headers["location"] == f"/runs/{run_id}/stream"
    assert response.headers["content-location"] == f"/runs/{run_id}"

    thread_id = (await sdk.threads.create())["thread_id"]
    run = await sdk.runs.create(thread_id, "slow", input={"steps": 200, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    assert await sdk.runs.cancel(thread_id, run["run_id"]) is None  # type: ignore[func-returns-value]  # 202, no body
    await _status(sdk, thread_id, run["run_id"], "interrupted")

    run = await sdk.runs.create(thread_id, "slow", input={"steps": 200, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    # The SDK types the reply as None; with wait=True the server answers what a join answers.
    stopped = await sdk.runs.cancel(thread_id, run["run_id"], wait=True)  # type: ignore[func-returns-value]
    # 200 once stopped, with what a join answers: the thread's values.
    assert stopped == (await sdk.threads.get_state(thread_id))["values"]
    assert (await sdk.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"


# -- gzip: the efficient path for `messages`, transparent ----------------------------------------------


async def _stream_bytes(http: httpx.AsyncClient, thread_id: str, encoding: str) -> tuple[list[Any], int]:
    body = {"assistant_id": "chat", "input": {"tokens": 300}, "stream_mode": "messages"}
    headers = {"Accept-Encoding": encoding}
    url = f"/threads/{thread_id}/runs/stream"
    async with http.stream("POST", url, json=body, headers=headers) as response:
        assert response.headers.get("content-encoding") == (None if encoding == "identity" else "gzip")
        text = (await response.aread()).decode()
        wire = response.num_bytes_downloaded
    events = [(e.event, e.data[0]["content"]) for e in parse_sse(text) if e.event == "messages/partial"]
    return events, wire


async def test_gzip_shrinks_the_messages_stream_and_changes_no_payload(server: Server) -> None:
    sdk, http = server.sdk, server.http
    thread_id = (await sdk.threads.create())["thread_id"]
    plain, plain_bytes = await _stream_bytes(http, thread_id, "identity")
    packed, packed_bytes = await _stream_bytes(http, thread_id, "gzip")
    assert packed == plain and len(plain) > 300
    # Every partial repeats the message so far, which gzip's window mostly removes.
    assert packed_bytes * 20 < plain_bytes, (packed_bytes, plain_bytes)

    # A flush per event: the first tick arrives while the run still waits at its gate.
    gate = _gate()
    ticker = {"assistant_id": "ticker", "input": {"n": 2, "gate": gate}, "stream_mode": "custom"}
    async with http.stream(
        "POST", f"/threads/{thread_id}/runs/stream", json=ticker, headers={"Accept-Encoding": "gzip"}
    ) as response:
        lines = response.aiter_lines()
        while await anext(lines) != 'data: {"i":0}':
            pass
        GATES[gate].set()
        rest = [line async for line in lines]
    assert 'data: {"i":1}' in rest
