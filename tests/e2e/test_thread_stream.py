"""Thread streaming v2 through the installed `langgraph-sdk`'s `client.threads.stream(...)`, over a
real loopback socket, on both transports (SSE and WebSocket): messages, values, tool calls,
subgraphs, interrupts answered with `input.respond`, and a dropped connection resumed by `since`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import httpx
import orjson
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk.client import LangGraphClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.demo.graphs import chat, hitl
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import serve
from tests.e2e._protocol_graphs import nested, tool_agent
from tests.e2e.test_sdk_api import GATES, GRAPHS

ALICE = {"x-api-key": "key-alice"}
BOB = {"x-api-key": "key-bob"}
TRANSPORTS = ["sse", "websocket"]


@pytest.fixture
async def manager() -> RunManager:
    return memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))


@pytest.fixture
async def url(manager: RunManager) -> AsyncIterator[str]:
    graphs = {**GRAPHS, "chat": chat, "hitl": hitl, "tool_agent": tool_agent, "nested": nested}
    runtime = LangGraphRuntime(graphs, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=2, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(
        manager,
        runtime,
        ApiSettings(api_keys={"key-alice": "alice", "key-bob": "bob"}, heartbeat_seconds=0.2),
    )
    try:
        async with serve(app, ws="websockets-sansio") as base:
            yield base
    finally:
        await worker.stop()


def sdk_client(url: str, transport: httpx.AsyncBaseTransport | None = None) -> LangGraphClient:
    http = httpx.AsyncClient(base_url=url, headers=ALICE, timeout=30, transport=transport)
    return LangGraphClient(http)


@pytest.fixture
async def sdk(url: str) -> AsyncIterator[LangGraphClient]:
    client = sdk_client(url)
    yield client
    await client.http.client.aclose()


async def _collect(items: AsyncIterable[Any]) -> list[Any]:
    return [item async for item in items]


def _text(messages: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in messages]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_messages_and_values_stream_as_the_run_goes(sdk: LangGraphClient, transport: str) -> None:
    # The WebSocket handshake carries only the stream's own headers.
    async with sdk.threads.stream(assistant_id="chat", transport=transport, headers=ALICE) as thread:  # type: ignore[arg-type]
        messages = asyncio.create_task(_collect(thread.messages))
        values = asyncio.create_task(_collect(thread.values))
        started = await thread.run.start(input={"messages": [{"role": "user", "content": "hello there"}]})
        output = await thread.output
        streams = await messages
        snapshots = await values
    assert _text(output["messages"]) == [("human", "hello there"), ("ai", "You said: hello there")]
    [stream] = streams
    assert await stream.text == "You said: hello there"
    assert stream.node == "agent"
    assert (await stream.output).usage_metadata["output_tokens"] == 4
    # The first snapshot is the thread's state before the stream; then one per superstep.
    assert [_text(s.get("messages", [])) for s in snapshots[1:]] == [
        [("human", "hello there")],
        [("human", "hello there"), ("ai", "You said: hello there")],
    ]
    # The run is an ordinary run of the thread, created with it.
    run = await sdk.runs.get(thread.thread_id, started["run_id"])
    assert run["status"] == "success"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tool_calls_are_projected_with_their_results(sdk: LangGraphClient, transport: str) -> None:
    async with sdk.threads.stream(assistant_id="tool_agent", transport=transport, headers=ALICE) as thread:  # type: ignore[arg-type]
        calls = asyncio.create_task(_collect(thread.tool_calls))
        messages = asyncio.create_task(_collect(thread.messages))
        await thread.run.start(input={"messages": [{"role": "user", "content": "what is 1 + 2?"}]})
        output = await thread.output
        [call] = await calls
        streams = await messages
    assert (call.tool_call_id, call.name, call.input) == ("call-add-1", "add", {"a": 1, "b": 2})
    assert await call.output == "3"
    [asked, answered] = streams
    assert (await asked.tool_calls)[0]["args"] == {"a": 1, "b": 2}
    assert await answered.text == "The sum is 3."
    assert output["messages"][-1]["content"] == "The sum is 3."


async def test_subgraphs_are_discovered_with_their_own_messages(sdk: LangGraphClient) -> None:
    async with sdk.threads.stream(assistant_id="nested") as thread:

        async def children() -> list[tuple[Any, str, list[str]]]:
            # A child's events flow through the subgraphs iterator: read them beside it, not in it.
            found = []
            async for child in thread.subgraphs:
                found.append((child, asyncio.create_task(_collect(child.messages))))
            return [
                (child.graph_name, child.namespace[0].split(":")[0], [await m.text for m in await task])
                for child, task in found
            ]

        handles = asyncio.create_task(children())
        await thread.run.start(input={"messages": [{"role": "user", "content": "deep"}]})
        await thread.output
        found = await handles
    assert found == [("inner", "inner", ["You said: deep"])]
    # `agent.getTree`: the run's namespaces with their status.
    async with httpx.AsyncClient(base_url=sdk.http.client.base_url, headers=ALICE) as http:
        command = {"id": 9, "method": "agent.getTree", "params": {}}
        answer = await http.post(f"/threads/{thread.thread_id}/commands", json=command)
    tree = answer.json()["result"]["tree"]
    [child] = tree.pop("children")
    assert tree == {"namespace": [], "status": "completed", "graph_name": "nested"}
    assert child["namespace"][0].startswith("inner:")
    assert (child["status"], child["graph_name"]) == ("completed", "inner")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_interrupt_is_answered_with_input_respond(sdk: LangGraphClient, transport: str) -> None:
    async with sdk.threads.stream(assistant_id="hitl", transport=transport, headers=ALICE) as thread:  # type: ignore[arg-type]
        events = asyncio.create_task(_collect(thread.subscribe(["lifecycle", "input"])))
        await thread.run.start(input={"question": "Ship it?"})
        paused = await events  # a subscription ends when the run pauses for input
        assert thread.interrupted
        [interrupt] = thread.interrupts
        assert interrupt["value"] == {"question": "Ship it?"}
        assert interrupt["namespace"] == []
        assert [e["method"] for e in paused][-1] == "input.requested"

        answered = await thread.run.respond("yes")
        output = await thread.output
    assert output == {"question": "Ship it?", "answer": "yes", "confirmed": True}
    runs = await sdk.runs.list(thread.thread_id)
    assert runs[0]["run_id"] == answered["run_id"]  # newest first
    assert [r["status"] for r in runs] == ["success", "success"]


async def test_responding_to_an_unknown_interrupt_is_a_protocol_error(url: str) -> None:
    thread_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=url, headers=ALICE) as http:
        start = {"id": 1, "method": "run.start", "params": {"assistant_id": "hitl", "input": {}}}
        started = (await http.post(f"/threads/{thread_id}/commands", json=start)).json()
        assert started["type"] == "success"
        await http.get(f"/threads/{thread_id}/runs/{started['result']['run_id']}/join")
        respond = {"id": 2, "method": "input.respond", "params": {"interrupt_id": "nope", "response": 1}}
        refused = (await http.post(f"/threads/{thread_id}/commands", json=respond)).json()
        unknown = (await http.post(f"/threads/{thread_id}/commands", json={"id": 3, "method": "x.y"})).json()
        # Another user's thread is exactly an unknown one.
        async with httpx.AsyncClient(base_url=url, headers=BOB) as bob:
            foreign = await bob.post(f"/threads/{thread_id}/commands", json=start)
    assert refused == {
        "type": "error",
        "id": 2,
        "error": "invalid_argument",
        "message": "Unknown or already-consumed interrupt: nope",
    }
    assert unknown["error"] == "unknown_command"
    assert foreign.status_code == 404
    assert foreign.json()["error"] == "not_found"


class DroppingTransport(httpx.AsyncBaseTransport):
    """Cuts the first projection stream after its first `custom` event (a network failure, as
    the client sees it), and records the events every stream delivered."""

    def __init__(self, on_drop: asyncio.Event) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.on_drop = on_drop
        self.dropped = False
        #: Per connection: the events it delivered, and the body that opened it.
        self.connections: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Frames are cut from the raw bytes below: ask for them uncompressed (the server gzips event
        # streams for clients that accept it).
        request.headers["Accept-Encoding"] = "identity"
        response = await self.inner.handle_async_request(request)
        if not request.url.path.endswith("/stream/events"):
            return response
        body = orjson.loads(request.content)
        delivered: list[dict[str, Any]] = []
        self.connections.append((body, delivered))
        cut = not self.dropped and "custom" in body["channels"]
        self.dropped = self.dropped or cut
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_Recorded(response, delivered, cut, self.on_drop),
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Recorded(httpx.AsyncByteStream):
    def __init__(
        self, response: httpx.Response, delivered: list[Any], cut: bool, on_drop: asyncio.Event
    ) -> None:
        self.response, self.delivered, self.cut, self.on_drop = response, delivered, cut, on_drop

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buffer = b""
        async for chunk in self.response.aiter_raw():
            buffer += chunk
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                data = [line[6:] for line in frame.split(b"\n") if line.startswith(b"data: ")]
                if data:
                    event = orjson.loads(data[0])
                    self.delivered.append(event)
                yield frame + b"\n\n"
                if self.cut and data and event["method"] == "custom":
                    self.on_drop.set()
                    raise httpx.ReadError("connection reset by peer")

    async def aclose(self) -> None:
        await self.response.aclose()


async def test_a_dropped_stream_resumes_from_its_cursor_without_loss_or_duplicates(url: str) -> None:
    gate = f"ts-{uuid.uuid4()}"
    GATES[gate] = asyncio.Event()
    dropped = asyncio.Event()
    transport = DroppingTransport(dropped)
    client = sdk_client(url, transport)
    try:
        async with client.threads.stream(assistant_id="ticker") as thread:
            channels = ["lifecycle", "values", "updates", "custom", "tasks"]
            received = asyncio.create_task(_collect(thread.subscribe(channels)))
            await thread.run.start(input={"n": 4, "gate": gate})
            await dropped.wait()  # cut while the graph waits at its gate: the rest is yet to come
            GATES[gate].set()
            output = await thread.output
            events = await received
    finally:
        await client.http.client.aclose()
    assert output["ticks"] == [0, 1, 2, 3]
    seqs = [e["seq"] for e in events]
    base = seqs[0] - 1
    # Every event of the run, in order, once: nothing lost in the drop, nothing replayed twice.
    assert seqs == list(range(base + 1, base + 1 + len(seqs)))
    assert [e["params"]["data"]["payload"]["i"] for e in events if e["method"] == "custom"] == [0, 1, 2, 3]
    assert events[-1]["method"] == "lifecycle" and events[-1]["params"]["data"]["event"] == "completed"
    # On the wire too: the reconnection asked for what followed its cursor, and got only that.
    projection = [(body, got) for body, got in transport.connections if "custom" in body["channels"]]
    (first_body, first), (second_body, second) = projection[0], projection[-1]
    assert "since" not in first_body or first_body["since"] < first[0]["seq"]
    assert second_body["since"] == first[-1]["seq"]
    assert second[0]["seq"] == first[-1]["seq"] + 1
    delivered = [e["seq"] for _, got in projection for e in got]
    assert len(delivered) == len(set(delivered))


async def test_another_users_thread_streams_nothing(url: str, sdk: LangGraphClient) -> None:
    """A stream on a thread one cannot see waits like one on a thread that does not exist yet."""
    async with sdk.threads.stream(assistant_id="chat") as thread:
        await thread.run.start(input={"messages": [{"role": "user", "content": "secret"}]})
        await thread.output
    async with httpx.AsyncClient(base_url=url, headers=BOB, timeout=5) as bob:
        body = {"channels": ["values", "messages", "lifecycle"], "since": 0}
        async with bob.stream("POST", f"/threads/{thread.thread_id}/stream/events", json=body) as response:
            assert response.status_code == 200
            first = await anext(response.aiter_text())
    # Only heartbeats: Alice's finished run is there to replay from `since: 0`, but not for Bob.
    assert first.strip() in (": heartbeat", "")
    assert "secret" not in first


async def test_the_websocket_needs_credentials_and_a_valid_subscription(url: str) -> None:
    ws_url = url.replace("http://", "ws://") + f"/threads/{uuid.uuid4()}/stream/events"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url):
            pass
    assert refused.value.response.status_code == 401
    async with connect(ws_url, additional_headers=ALICE) as websocket:
        subscribe = {"id": 1, "method": "subscription.subscribe", "params": {"channels": ["nope"]}}
        await websocket.send(orjson.dumps(subscribe).decode())
        error = orjson.loads(await websocket.recv())
    assert (error["type"], error["error"]) == ("error", "invalid_argument")
    assert error["message"].startswith("body.channels.0: String should match pattern")
