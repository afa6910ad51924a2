"""`runplane.sse_response` / `sse_frames`: LangGraph's SSE frames, heartbeats while the run is
quiet, and an `error` event when the stream fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import runplane
from runplane.streaming import sse_frames


async def test_a_quiet_stream_sends_heartbeats_then_the_next_event() -> None:
    release = asyncio.Event()

    async def events() -> AsyncIterator[runplane.StreamEvent]:
        await release.wait()
        yield runplane.StreamEvent("values", b'{"a":1}', "7")

    frames = sse_frames(events(), heartbeat_seconds=0.001)
    assert await anext(frames) == b": heartbeat\n\n"
    release.set()
    rest = [frame async for frame in frames]
    assert rest[-1] == b'event: values\ndata: {"a":1}\nid: 7\n\n'
    assert set(rest[:-1]) <= {b": heartbeat\n\n"}


async def test_a_failing_stream_ends_with_an_error_event() -> None:
    async def events() -> AsyncIterator[runplane.StreamEvent]:
        raise runplane.NotFound("run 42 not found")
        yield  # an async generator

    frames = [frame async for frame in sse_frames(events())]
    assert frames == [b'event: error\ndata: {"error":"NotFound","message":"run 42 not found"}\n\n']


def test_sse_response_is_a_starlette_response_with_the_event_stream_type() -> None:
    async def events() -> AsyncIterator[runplane.StreamEvent]:
        yield runplane.StreamEvent("end", b"null")

    response = runplane.sse_response(events(), headers={"x-extra": "1"})
    assert response.media_type == "text/event-stream"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-extra"] == "1"
