"""What a run streams: event names and payloads per stream mode, as LangGraph's server sends them."""

from __future__ import annotations

import dataclasses
import json

import pydantic
from langchain_core.messages import AIMessage
from langgraph.types import Interrupt, Send

from runplane.runtime.serde import dumpb
from tests.integration._worker_support import decode, harness


async def test_first_event_is_metadata_with_run_id_and_attempt() -> None:
    async with harness() as h:
        run = await h.run("echo", input={"n": 1})
        events = await h.events(run)
    assert events[0].event == "metadata"
    assert decode(events[0]) == {"run_id": run.run_id, "attempt": 1}


async def test_values_and_updates_match_the_reference_server() -> None:
    async with harness() as h:
        run = await h.run("echo", input={"n": 1}, stream_mode=["values", "updates"])
        events = await h.events(run)
    # The reference's sse_echo_values_updates probe, byte for byte.
    assert [(e.event, e.data) for e in events[1:]] == [
        ("values", b'{"n":1}'),
        ("updates", b'{"echo":{"messages":[],"n":1}}'),
        ("values", b'{"messages":[],"n":1}'),
    ]


async def test_a_burst_reaches_readers_while_it_is_still_being_published() -> None:
    # A node that emits without awaiting leaves LangGraph a backlog that `astream` yields without
    # suspending: a reader (an SSE pump) must get turns during the backlog, not one at its end.
    count = 5000
    async with harness() as h:
        run = await h.run("bursty", input={"count": count}, stream_mode=["custom"])
        received: list[int] = []
        published_when_the_second_arrived = None
        async for batch in h.manager.bus.subscribe_batches(run.run_id):
            received += [decode(e)["i"] for e in batch if e.event == "custom"]
            if published_when_the_second_arrived is None and len(received) >= 2:
                published_when_the_second_arrived = int(await h.manager.bus.latest_event_id(run.run_id) or 0)
    assert received == list(range(count))
    assert published_when_the_second_arrived is not None
    # Event ids count from 1: the metadata event, then the burst.
    assert published_when_the_second_arrived < 1 + count


async def test_default_stream_mode_is_values() -> None:
    async with harness() as h:
        run = await h.run("echo", input={"n": 2})
        events = await h.events(run)
    assert [e.event for e in events] == ["metadata", "values", "values"]


async def test_custom_debug_tasks_and_checkpoints_names() -> None:
    async with harness() as h:
        run = await h.run(
            "slow",
            input={"steps": 1, "delay": 0},
            stream_mode=["custom", "debug", "tasks", "checkpoints"],
        )
        events = await h.events(run)
    names = [e.event for e in events]
    assert set(names) == {"metadata", "custom", "debug", "tasks", "checkpoints"}
    assert decode(next(e for e in events if e.event == "custom")) == {"step": 0, "of": 1}
    debug_checkpoint = decode(next(e for e in events if e.event == "debug"))
    assert debug_checkpoint["type"] == "checkpoint"
    # As LangGraph's server: debug checkpoints also carry the SDK-shaped `checkpoint`.
    assert debug_checkpoint["payload"]["checkpoint"]["thread_id"] == run.thread_id
    checkpoint = decode(next(e for e in events if e.event == "checkpoints"))
    assert {"config", "values", "metadata", "next", "tasks"} <= set(checkpoint)


async def test_subgraph_events_carry_the_namespace() -> None:
    async with harness() as h:
        run = await h.run(
            "nested", input={"x": 1}, stream_mode=["values", "updates", "custom"], stream_subgraphs=True
        )
        events = await h.events(run)
    names = [e.event for e in events]
    child = [n for n in names if "|" in n]
    assert child and all(n.split("|")[1].startswith("child:") for n in child)
    assert {n.split("|")[0] for n in child} == {"values", "updates", "custom"}
    assert names[-1] == "values" and decode(events[-1]) == {"x": 2}
    assert ("updates", {"child": {"x": 2}}) in [(e.event, decode(e)) for e in events]


async def test_subgraph_events_are_hidden_without_stream_subgraphs() -> None:
    async with harness() as h:
        run = await h.run("nested", input={"x": 1}, stream_mode=["values", "custom"])
        events = await h.events(run)
    assert all("|" not in e.event for e in events)


async def test_messages_tuple_sends_chunk_and_metadata() -> None:
    async with harness() as h:
        run = await h.run("chat", input={"tokens": 3}, stream_mode=["messages-tuple"])
        events = await h.events(run)
    messages = [decode(e) for e in events if e.event == "messages"]
    assert [e.event for e in events] == ["metadata"] + ["messages"] * len(messages)
    assert "".join(chunk["content"] for chunk, _ in messages) == "tok0 tok1 tok2"
    chunk, metadata = messages[0]
    assert chunk["type"] == "AIMessageChunk"
    assert metadata["langgraph_node"] == "agent" and metadata["run_id"] == run.run_id


async def test_messages_mode_sends_the_whole_message_so_far_as_the_reference_server() -> None:
    async with harness() as h:
        run = await h.run("chat", input={"tokens": 3}, stream_mode=["messages"])
        events = await h.events(run)
    names = [e.event for e in events]
    assert names[:2] == ["metadata", "messages/metadata"]
    assert names[2:] == ["messages/partial"] * (len(names) - 2)
    partials = [decode(e)[0] for e in events if e.event == "messages/partial"]
    # Clients replace the message with each payload: every partial is the text so far.
    assert [p["content"] for p in partials] == ["tok0", "tok0 ", "tok0 tok1", "tok0 tok1 ", "tok0 tok1 tok2"]
    assert {p["type"] for p in partials} == {"ai"} and len({p["id"] for p in partials}) == 1


async def test_messages_tuple_bytes_grow_linearly_with_the_reply() -> None:
    streamed: dict[int, int] = {}
    async with harness() as h:
        for tokens in (100, 800):
            run = await h.run("chat", input={"tokens": tokens}, stream_mode=["messages-tuple"])
            events = await h.events(run)
            streamed[tokens] = sum(len(e.data) for e in events if e.event.startswith("messages"))
            # Every event is one chunk, however long the reply is.
            assert max(len(e.data) for e in events if e.event == "messages") < 1500
    # 8x the text -> about 8x the bytes (the whole message each time would be ~64x: quadratic).
    assert 7 < streamed[800] / streamed[100] < 9


async def test_events_mode_streams_callback_events_and_the_requested_modes() -> None:
    async with harness() as h:
        run = await h.run("chat", input={"tokens": 2}, stream_mode=["events", "values"])
        events = await h.events(run)
    kinds = {decode(e)["event"] for e in events if e.event == "events"}
    assert {"on_chain_start", "on_chat_model_stream", "on_chat_model_end", "on_chain_end"} <= kinds
    values = [decode(e) for e in events if e.event == "values"]
    assert values[-1]["messages"][-1]["content"] == "tok0 tok1"


async def test_hitl_interrupt_is_streamed_in_values_and_updates() -> None:
    async with harness() as h:
        run = await h.run("hitl", input={"question": "name?"}, stream_mode=["values", "updates"])
        events = await h.events(run)
    interrupt = decode(events[-1])["__interrupt__"][0]
    assert interrupt["value"] == {"question": "name?"} and interrupt["id"]
    assert [e.event for e in events] == ["metadata", "values", "updates", "values"]
    assert "__interrupt__" in decode(events[2])


def test_payloads_are_encoded_like_langgraph_api() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    class Model(pydantic.BaseModel):
        name: str

    payload = {
        "message": AIMessage(content="hi", id="m1"),
        "interrupt": Interrupt(value={"q": 1}, id="i1"),
        "send": Send("node", {"a": 1}),
        "model": Model(name="n"),
        "point": Point(1),
        "error": ValueError("bad"),
        "set": {1},
        "huge": 2**70,
        "nul": "a\x00b",
    }
    decoded = json.loads(dumpb(payload))
    assert decoded["message"]["type"] == "ai" and decoded["message"]["content"] == "hi"
    assert decoded["interrupt"] == {"value": {"q": 1}, "id": "i1", "response_schema": None}
    assert decoded["send"] == {"node": "node", "args": {"a": 1}}
    assert decoded["model"] == {"name": "n"} and decoded["point"] == {"x": 1}
    assert decoded["error"] == {"error": "ValueError", "message": "bad"}
    assert decoded["set"] == [1] and decoded["huge"] == 2**70 and decoded["nul"] == "a\ufffdb"
