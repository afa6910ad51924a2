"""The official `langgraph-sdk` client, unchanged, against runplane over a real loopback socket.

The server is uvicorn in the test's event loop, serving the real API over the in-memory manager, the
real LangGraph runtime and the real worker, so every SDK call crosses HTTP exactly as in production.
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError
from typing_extensions import TypedDict

from runplane.api import ApiSettings, create_app
from runplane.core.graphs import default_assistant_id
from runplane.core.manager import ManagerSettings, RunManager
from runplane.demo.graphs import chat, echo, hitl, slow
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import serve

# -- graphs ------------------------------------------------------------------------------------------


class XState(TypedDict, total=False):
    x: int


async def _boom(state: XState) -> XState:
    raise ValueError("boom!")


_failer = StateGraph(XState)
_failer.add_node("boom", _boom)
_failer.add_edge(START, "boom")
_failer.add_edge("boom", END)


class TickState(TypedDict, total=False):
    n: int
    gate: str
    ticks: Annotated[list[int], operator.add]


#: Events the `ticker` graph waits on between ticks, by gate name (set by tests).
GATES: dict[str, asyncio.Event] = {}


async def _tick(state: TickState) -> TickState:
    write = get_stream_writer()
    gate = state.get("gate")
    for i in range(int(state.get("n", 3))):
        write({"i": i})
        if gate and i == 0:
            await GATES.setdefault(gate, asyncio.Event()).wait()
    return {"ticks": list(range(int(state.get("n", 3))))}


_ticker = StateGraph(TickState)
_ticker.add_node("tick", _tick)
_ticker.add_edge(START, "tick")
_ticker.add_edge("tick", END)

GRAPHS = {
    "echo": echo,
    "chat": chat,
    "slow": slow,
    "hitl": hitl,
    "failer": _failer.compile(name="failer"),
    "ticker": _ticker.compile(name="ticker"),
}


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
async def manager() -> RunManager:
    return memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))


@pytest.fixture
async def sdk(manager: RunManager) -> AsyncIterator[LangGraphClient]:
    runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=4, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.2))
    try:
        async with serve(app) as url:
            client = get_client(url=url, api_key=None)
            try:
                yield client
            finally:
                await client.aclose()
    finally:
        await worker.stop()


async def _status(sdk: LangGraphClient, thread_id: str, run_id: str, wanted: str) -> dict[str, Any]:
    for _ in range(500):
        run = await sdk.runs.get(thread_id, run_id)
        if run["status"] == wanted:
            return dict(run)
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {wanted}")


# -- assistants and threads ----------------------------------------------------------------------------


async def test_assistants(sdk: LangGraphClient) -> None:
    found = await sdk.assistants.search(limit=100)
    assert {a["graph_id"] for a in found} == set(GRAPHS)
    assert await sdk.assistants.count(graph_id="echo") == 1
    page = await sdk.assistants.search(limit=2, response_format="object")
    assert len(page["assistants"]) == 2 and page["next"] == "2"
    echo_id = default_assistant_id("echo")
    assert (await sdk.assistants.get(echo_id))["graph_id"] == "echo"
    graph = await sdk.assistants.get_graph("echo")
    assert {node["id"] for node in graph["nodes"]} >= {"__start__", "echo", "__end__"}
    schemas = await sdk.assistants.get_schemas(echo_id)
    assert schemas["input_schema"] is not None
    assert schemas["graph_id"] == "echo" and "properties" in schemas["input_schema"]
    assert await sdk.assistants.get_subgraphs(echo_id) == {}
    with pytest.raises(NotFoundError):
        await sdk.assistants.get(str(uuid.uuid4()))


async def test_threads_crud_search_copy(sdk: LangGraphClient) -> None:
    thread_id = str(uuid.uuid4())
    thread = await sdk.threads.create(thread_id=thread_id, metadata={"user": "u1"}, graph_id="echo")
    assert thread["thread_id"] == thread_id and thread["metadata"] == {"user": "u1", "graph_id": "echo"}
    with pytest.raises(ConflictError):
        await sdk.threads.create(thread_id=thread_id)
    assert (await sdk.threads.create(thread_id=thread_id, if_exists="do_nothing"))["thread_id"] == thread_id
    updated = await sdk.threads.update(thread_id, metadata={"more": 1})
    assert updated["metadata"] is not None and updated["metadata"]["more"] == 1
    assert await sdk.threads.update(thread_id, metadata={"x": 1}, return_minimal=True) is None  # type: ignore[func-returns-value]
    metadata = (await sdk.threads.get(thread_id))["metadata"]
    assert metadata is not None and metadata["x"] == 1

    found = await sdk.threads.search(metadata={"user": "u1"}, status="idle", limit=5)
    assert [t["thread_id"] for t in found] == [thread_id]
    assert await sdk.threads.count(metadata={"user": "u1"}) == 1
    selected = await sdk.threads.search(ids=[thread_id], select=["thread_id", "status"])
    assert [dict(t) for t in selected] == [{"thread_id": thread_id, "status": "idle"}]

    await sdk.runs.wait(thread_id, "echo", input={"n": 3})
    # The SDK types the copy as None; the server answers the new thread, as LangGraph's does.
    copy: Any = await sdk.threads.copy(thread_id)  # type: ignore[func-returns-value]
    assert copy["thread_id"] != thread_id
    assert (await sdk.threads.get_state(copy["thread_id"]))["values"] == {"messages": [], "n": 3}
    await sdk.threads.delete(thread_id)
    with pytest.raises(NotFoundError):
        await sdk.threads.get(thread_id)


async def test_thread_state_and_history(sdk: LangGraphClient) -> None:
    thread = await sdk.threads.create(graph_id="echo")
    thread_id = thread["thread_id"]
    empty = await sdk.threads.get_state(thread_id)
    assert empty["values"] == {} and empty["checkpoint"] is None

    await sdk.runs.wait(thread_id, "echo", input={"n": 1})
    state = await sdk.threads.get_state(thread_id)
    assert state["values"] == {"messages": [], "n": 1}
    checkpoint_id = state["checkpoint"]["checkpoint_id"]

    update = await sdk.threads.update_state(thread_id, {"n": 2}, as_node="echo")
    assert update["checkpoint"]["checkpoint_id"] != checkpoint_id
    assert (await sdk.threads.get(thread_id))["values"]["n"] == 2
    at = await sdk.threads.get_state(thread_id, checkpoint_id=checkpoint_id)
    assert at["values"]["n"] == 1
    by_checkpoint = await sdk.threads.get_state(thread_id, checkpoint=state["checkpoint"])
    assert by_checkpoint["values"]["n"] == 1

    history = await sdk.threads.get_history(thread_id, limit=10)
    assert history[0]["values"]["n"] == 2 and len(history) >= 3
    older = await sdk.threads.get_history(thread_id, before=history[0]["checkpoint"], limit=1)
    assert older[0]["checkpoint"]["checkpoint_id"] == history[1]["checkpoint"]["checkpoint_id"]


# -- runs ----------------------------------------------------------------------------------------------


async def test_background_run_join_list_delete(sdk: LangGraphClient) -> None:
    thread = await sdk.threads.create()
    created: list[Any] = []
    run = await sdk.runs.create(
        thread["thread_id"], "echo", input={"n": 5}, metadata={"mk": "mv"}, on_run_created=created.append
    )
    assert run["status"] in ("pending", "running", "success")
    assert created == [{"run_id": run["run_id"], "thread_id": thread["thread_id"]}]
    assert await sdk.runs.join(thread["thread_id"], run["run_id"]) == {"messages": [], "n": 5}
    got = await sdk.runs.get(thread["thread_id"], run["run_id"])
    assert got["status"] == "success" and got["metadata"] is not None and got["metadata"]["mk"] == "mv"
    listed = await sdk.runs.list(thread["thread_id"], limit=20)
    assert [r["run_id"] for r in listed] == [run["run_id"]]
    await sdk.runs.delete(thread["thread_id"], run["run_id"])
    with pytest.raises(NotFoundError):
        await sdk.runs.get(thread["thread_id"], run["run_id"])


async def test_wait_error_interrupt_and_resume(sdk: LangGraphClient) -> None:
    thread = await sdk.threads.create()
    thread_id = thread["thread_id"]
    with pytest.raises(Exception, match="ValueError: boom!"):
        await sdk.runs.wait(thread_id, "failer", input={"x": 1})
    body = await sdk.runs.wait(thread_id, "failer", input={"x": 1}, raise_error=False)
    assert body == {"__error__": {"error": "ValueError", "message": "boom!"}}
    assert (await sdk.threads.get(thread_id))["status"] == "error"

    hitl_thread = (await sdk.threads.create())["thread_id"]
    asked = await sdk.runs.wait(hitl_thread, "hitl", input={"question": "name?"})
    assert isinstance(asked, dict) and asked["question"] == "name?"
    [pending] = asked["__interrupt__"]
    assert pending["value"] == {"question": "name?"} and pending["id"]
    assert (await sdk.threads.get(hitl_thread))["status"] == "interrupted"
    resumed = await sdk.runs.wait(hitl_thread, "hitl", command={"resume": "bob"})
    assert resumed == {"question": "name?", "answer": "bob", "confirmed": True}
    assert (await sdk.threads.get(hitl_thread))["status"] == "idle"


async def test_stateless_runs(sdk: LangGraphClient) -> None:
    assert await sdk.runs.wait(None, "echo", input={"n": 9}) == {"messages": [], "n": 9}
    with pytest.raises(Exception, match="boom!"):
        await sdk.runs.wait(None, "failer", input={"x": 1})
    parts = [p async for p in sdk.runs.stream(None, "echo", input={"n": 2})]
    assert [p.event for p in parts] == ["metadata", "values", "values"]
    batch = await sdk.runs.create_batch([{"assistant_id": "echo", "input": {"n": i}} for i in range(2)])  # type: ignore[typeddict-item]
    assert len({r["thread_id"] for r in batch}) == 2
    kept: list[Any] = []
    await sdk.runs.wait(None, "echo", input={"n": 1}, on_completion="keep", on_run_created=kept.append)
    assert kept[0]["thread_id"] is None  # announced as /runs/{run_id}, like the reference server


async def test_stateless_threads_are_deleted_unless_kept(sdk: LangGraphClient, manager: RunManager) -> None:
    await sdk.runs.wait(None, "echo", input={"n": 9})
    await sdk.runs.wait(None, "echo", input={"n": 1}, on_completion="keep")
    for _ in range(100):
        if await manager.count_threads() == 1:
            break
        await asyncio.sleep(0.01)
    assert await manager.count_threads() == 1


@pytest.mark.parametrize(
    ("modes", "expected"),
    [
        ("values", {"values"}),
        (["updates"], {"updates"}),
        (["custom"], {"custom"}),
        (["messages-tuple"], {"messages"}),
        (["messages"], {"messages/metadata", "messages/partial"}),
        (["tasks", "checkpoints"], {"tasks", "checkpoints"}),
        (["debug"], {"debug"}),
        (["events"], {"events"}),
    ],
)
async def test_stream_modes(sdk: LangGraphClient, modes: Any, expected: set[str]) -> None:
    thread = await sdk.threads.create()
    graph = "ticker" if "custom" in modes else "chat"
    payload: dict[str, Any] = (
        {"n": 2} if graph == "ticker" else {"messages": [{"role": "user", "content": "hi there"}]}
    )
    parts = [p async for p in sdk.runs.stream(thread["thread_id"], graph, input=payload, stream_mode=modes)]
    assert parts[0].event == "metadata" and parts[0].data["attempt"] == 1
    assert {p.event for p in parts[1:]} >= expected
    assert {p.event.partition("|")[0] for p in parts[1:]} <= expected | {"messages/complete"}


async def test_stream_v2_and_interrupt(sdk: LangGraphClient) -> None:
    thread = await sdk.threads.create()
    parts = [
        p
        async for p in sdk.runs.stream(
            thread["thread_id"],
            "hitl",
            input={"question": "q?"},
            stream_mode=["values", "updates"],
            version="v2",
        )
    ]
    types = [p["type"] for p in parts]
    assert types[0] == "metadata" and "values" in types and "updates" in types
    assert any(p["interrupts"] for p in parts if p["type"] == "values")


async def test_multitask_reject_and_enqueue(sdk: LangGraphClient) -> None:
    thread_id = (await sdk.threads.create())["thread_id"]
    first = await sdk.runs.create(thread_id, "slow", input={"steps": 1, "delay": 0.3})
    with pytest.raises(ConflictError):
        await sdk.runs.create(thread_id, "echo", multitask_strategy="reject")
    second = await sdk.runs.create(thread_id, "echo", input={"n": 1})
    assert second["multitask_strategy"] == "enqueue"
    assert await sdk.runs.join(thread_id, second["run_id"]) == {"messages": [], "n": 1}
    assert (await sdk.runs.get(thread_id, first["run_id"]))["status"] == "success"


async def test_cancel_interrupt_and_rollback(sdk: LangGraphClient) -> None:
    thread_id = (await sdk.threads.create())["thread_id"]
    run = await sdk.runs.create(thread_id, "slow", input={"steps": 50, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    await sdk.runs.cancel(thread_id, run["run_id"], wait=True, action="interrupt")
    assert (await sdk.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
    assert (await sdk.threads.get(thread_id))["status"] != "busy"

    run = await sdk.runs.create(thread_id, "slow", input={"steps": 50, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    await sdk.runs.cancel(thread_id, run["run_id"], action="rollback")
    for _ in range(300):
        try:
            await sdk.runs.get(thread_id, run["run_id"])
        except NotFoundError:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("rolled-back run still exists")
    assert (await sdk.threads.get(thread_id))["status"] == "idle"

    run = await sdk.runs.create(thread_id, "slow", input={"steps": 50, "delay": 0.05})
    await _status(sdk, thread_id, run["run_id"], "running")
    await sdk.runs.cancel_many(thread_id=thread_id, run_ids=[run["run_id"]])
    await _status(sdk, thread_id, run["run_id"], "interrupted")
    with pytest.raises(NotFoundError):
        await sdk.runs.cancel_many(status="running")


async def test_join_stream_resumes_after_last_event_id(sdk: LangGraphClient) -> None:
    thread_id = (await sdk.threads.create())["thread_id"]
    gate = f"resume-{uuid.uuid4()}"
    GATES[gate] = asyncio.Event()
    run = await sdk.runs.create(
        thread_id,
        "ticker",
        input={"n": 6, "gate": gate},
        stream_mode=["custom", "values"],
        stream_resumable=True,
    )
    seen = []
    async for part in sdk.runs.join_stream(thread_id, run["run_id"], last_event_id="-1"):
        seen.append(part)
        if part.event == "custom":
            break  # the client drops the connection after the first tick
    assert all(p.id for p in seen)
    GATES[gate].set()
    rest = [p async for p in sdk.runs.join_stream(thread_id, run["run_id"], last_event_id=seen[-1].id)]
    assert [p.data for p in rest if p.event == "custom"] == [{"i": i} for i in range(1, 6)]
    everything = [p async for p in sdk.runs.join_stream(thread_id, run["run_id"], last_event_id="-1")]
    assert [p.id for p in everything] == [p.id for p in seen] + [p.id for p in rest]
    only_custom = [
        p
        async for p in sdk.runs.join_stream(thread_id, run["run_id"], stream_mode="custom", last_event_id="0")
    ]
    assert {p.event for p in only_custom} == {"custom"}


async def test_stream_disconnect_cancel_and_join_stream_cancel(sdk: LangGraphClient) -> None:
    thread_id = (await sdk.threads.create())["thread_id"]
    async for part in sdk.runs.stream(
        thread_id, "slow", input={"steps": 100, "delay": 0.05}, stream_mode="custom", on_disconnect="cancel"
    ):
        if part.event == "metadata":
            run_id = part.data["run_id"]
        if part.event == "custom":
            break
    await _status(sdk, thread_id, run_id, "interrupted")

    run = await sdk.runs.create(thread_id, "slow", input={"steps": 100, "delay": 0.05}, stream_mode="custom")
    async for part in sdk.runs.join_stream(thread_id, run["run_id"], cancel_on_disconnect=True):
        if part.event == "custom":
            break
    await _status(sdk, thread_id, run["run_id"], "interrupted")


async def test_errors_reach_the_sdk_as_typed_exceptions(sdk: LangGraphClient) -> None:
    with pytest.raises(NotFoundError):
        await sdk.threads.get(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        await sdk.runs.create(str(uuid.uuid4()), "echo")
    thread_id = (await sdk.threads.create())["thread_id"]
    with pytest.raises(UnprocessableEntityError):
        await sdk.runs.create(thread_id, "echo", stream_mode="bogus")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await sdk.runs.create(thread_id, "no-such-graph")
    with pytest.raises(httpx.HTTPStatusError):
        await sdk.threads.get("not-a-uuid")
