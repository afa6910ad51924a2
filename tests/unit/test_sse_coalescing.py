"""SSE writes are coalesced (issue 14): events that are ready together leave in one body message
(one pass down the ASGI stack, one socket write), after the first frame, which leaves alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from runplane.api.sse import EventStream, encode_event
from runplane.core.events import StreamEvent


async def _run(events: AsyncIterator[StreamEvent]) -> list[bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    stream = EventStream(events, headers={}, heartbeat_seconds=30, with_ids=True)
    await stream({"type": "http", "headers": []}, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start"
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    return [message["body"] for message in sent[1:-1]]


def _events(count: int) -> list[StreamEvent]:
    return [StreamEvent("custom", b'{"i":%d}' % i, str(i)) for i in range(count)]


async def test_events_ready_together_leave_in_one_write_after_the_first() -> None:
    events = _events(100)

    async def ready() -> AsyncIterator[StreamEvent]:
        for event in events:
            yield event

    bodies = await _run(ready())
    frames = [encode_event(event.event, event.data, event.id) for event in events]
    assert bodies == [frames[0], b"".join(frames[1:])]


async def test_events_apart_in_time_leave_one_by_one_in_order() -> None:
    events = _events(3)
    gates = [asyncio.Event() for _ in events]

    async def apart() -> AsyncIterator[StreamEvent]:
        for event, gate in zip(events, gates, strict=True):
            await gate.wait()
            yield event

    sending = asyncio.ensure_future(_run(apart()))
    for gate in gates:
        gate.set()
        for _ in range(5):  # let the pump frame it and the sender send it
            await asyncio.sleep(0)
    bodies = await sending
    assert bodies == [encode_event(event.event, event.data, event.id) for event in events]
