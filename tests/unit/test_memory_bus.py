"""`InMemoryBus`: resumable run streams, bounded replay, retention, listen/notify."""

from __future__ import annotations

import asyncio
import re

import pytest

import runplane.events.memory as memory_bus
from runplane.core.errors import InvalidInput
from runplane.core.events import StreamEvent
from runplane.events.memory import InMemoryBus, parse_event_id


async def _drain(bus: InMemoryBus, run_id: str, last_event_id: str | None = None) -> list[StreamEvent]:
    async with asyncio.timeout(5):
        return [event async for event in bus.subscribe(run_id, last_event_id)]


def _counts(bus: InMemoryBus) -> tuple[int, int]:
    match = re.fullmatch(r"<InMemoryBus streams=(\d+) channels=(\d+)>", repr(bus))
    assert match, repr(bus)
    return int(match[1]), int(match[2])


class FakeMonotonic:
    """Stands in for the bus's `time` module, so retention is tested without sleeping (patching
    `time.monotonic` itself would move asyncio's clock too)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_event_ids_are_monotonic_from_one() -> None:
    bus = InMemoryBus()
    ids = [await bus.publish("r1", "values", b"{}") for _ in range(3)]
    assert ids == ["1", "2", "3"]
    assert await bus.publish("r2", "values", b"{}") == "1"  # per run


@pytest.mark.parametrize("cut", [None, "", "0", "1", "250", "999", "1000", "5000"])
async def test_resume_after_1000_back_to_back_events(cut: str | None) -> None:
    bus = InMemoryBus()
    for n in range(1, 1001):
        await bus.publish("r1", "custom", b'{"n": %d}' % n)
    await bus.end_stream("r1")
    events = await _drain(bus, "r1", cut)
    start = int(cut or 0)
    assert [int(event.id) for event in events] == list(range(start + 1, 1001))
    assert [event.data for event in events] == [b'{"n": %d}' % n for n in range(start + 1, 1001)]
    assert {event.event for event in events} <= {"custom"}


async def test_live_subscribers_resuming_at_cuts_see_no_gap_and_no_duplicate() -> None:
    bus = InMemoryBus()
    seen: list[int] = []

    async def reader(after: str | None, stop_at: int | None) -> str | None:
        async for event in bus.subscribe("r1", after):
            seen.append(int(event.id))
            if stop_at is not None and int(event.id) == stop_at:
                return event.id  # the client disconnects here and resumes with this Last-Event-ID
        return None

    async def publisher() -> None:
        for n in range(1, 1001):
            await bus.publish("r1", "values", b"%d" % n)
            if n % 100 == 0:
                await asyncio.sleep(0)  # let readers interleave with bursts
        await bus.end_stream("r1")

    async with asyncio.timeout(5):
        publishing = asyncio.create_task(publisher())
        last = None
        for stop_at in (1, 137, 500, 501, 999, None):
            last = await reader(last, stop_at)
        await publishing
    assert seen == list(range(1, 1001))


async def test_concurrent_subscribers_each_get_everything() -> None:
    bus = InMemoryBus()
    readers = [asyncio.create_task(_drain(bus, "r1")) for _ in range(5)]
    await asyncio.sleep(0)
    for n in range(200):
        await bus.publish("r1", "values", b"%d" % n)
    await bus.end_stream("r1")
    for events in await asyncio.gather(*readers):
        assert [event.data for event in events] == [b"%d" % n for n in range(200)]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", " 2x", "0x10"])
async def test_invalid_last_event_id_raises_before_anything(bad: str) -> None:
    bus = InMemoryBus()
    await bus.publish("r1", "values", b"1")
    stream = bus.subscribe("r1", bad)
    with pytest.raises(InvalidInput, match="Last-Event-ID"):
        await anext(stream)
    with pytest.raises(InvalidInput):
        parse_event_id(bad)


def test_parse_event_id() -> None:
    assert parse_event_id(None) == 0
    assert parse_event_id("") == 0
    assert parse_event_id("42") == 42


async def test_replay_is_bounded_by_count() -> None:
    bus = InMemoryBus(max_events=3)
    for n in range(1, 6):
        await bus.publish("r1", "values", b"%d" % n)
    await bus.end_stream("r1")
    assert [event.id for event in await _drain(bus, "r1")] == ["3", "4", "5"]
    # A client that resumes from a trimmed event skips to what is left rather than waiting.
    assert [event.id for event in await _drain(bus, "r1", "1")] == ["3", "4", "5"]
    assert [event.id for event in await _drain(bus, "r1", "4")] == ["5"]


async def test_replay_is_bounded_by_bytes_but_keeps_the_last_event() -> None:
    bus = InMemoryBus(max_bytes=10)
    await bus.publish("r1", "values", b"12345")
    await bus.publish("r1", "values", b"67890")
    await bus.publish("r1", "values", b"abc")
    await bus.publish("r1", "values", b"x" * 50)  # larger than the bound on its own: still kept
    await bus.end_stream("r1")
    assert [event.id for event in await _drain(bus, "r1")] == ["4"]


async def test_end_stream_stops_live_subscribers() -> None:
    bus = InMemoryBus()
    reader = asyncio.create_task(_drain(bus, "r1"))
    await bus.publish("r1", "values", b"1")
    await asyncio.sleep(0)
    assert not reader.done()
    await bus.end_stream("r1")
    await bus.end_stream("r1")  # idempotent
    assert [event.id for event in await reader] == ["1"]


async def test_publishing_after_the_end_is_dropped() -> None:
    bus = InMemoryBus()
    await bus.publish("r1", "values", b"1")
    await bus.end_stream("r1")
    assert await bus.publish("r1", "values", b"late") == "1"
    assert [event.data for event in await _drain(bus, "r1")] == [b"1"]


async def test_ended_streams_are_forgotten_after_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr(memory_bus, "time", clock)
    bus = InMemoryBus(retention_seconds=60)
    for n in range(100):
        await bus.publish(f"r{n}", "values", b"x")
        await bus.end_stream(f"r{n}")
    await bus.publish("live", "values", b"x")  # not ended: kept however old
    assert _counts(bus) == (101, 0)
    clock.now += 59
    await bus.publish("other", "values", b"x")
    assert _counts(bus) == (102, 0)  # within retention: late clients can still replay
    assert len(await _drain(bus, "r0")) == 1
    clock.now += 2
    await bus.publish("other", "values", b"x")  # any use of the bus expires old streams
    assert _counts(bus) == (2, 0)
    assert len(bus._ended) == 0


async def test_a_stream_ended_again_after_expiry_is_not_double_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeMonotonic()
    monkeypatch.setattr(memory_bus, "time", clock)
    bus = InMemoryBus(retention_seconds=10)
    await bus.end_stream("r1")
    clock.now += 11
    await bus.end_stream("r1")  # expired first, then a fresh, ended stream
    clock.now += 5
    await bus.end_stream("r2")
    assert _counts(bus) == (2, 0)
    clock.now += 6
    await bus.end_stream("r3")
    assert _counts(bus) == (2, 0)  # r1 went, r2 and r3 stay


async def test_listen_then_notify() -> None:
    bus = InMemoryBus()
    await bus.notify("chan", "nobody hears this")
    async with bus.listen("chan") as first, bus.listen("chan") as second:
        assert _counts(bus) == (0, 1)
        await bus.notify("chan", "a")
        await bus.notify("other", "b")
        await bus.notify("chan")
        async with asyncio.timeout(1):
            assert [await anext(first), await anext(first)] == ["a", ""]
            assert await anext(second) == "a"
    assert _counts(bus) == (0, 0)
    await bus.notify("chan", "after")


async def test_a_listener_gets_notifications_sent_before_it_reads() -> None:
    bus = InMemoryBus()
    async with bus.listen("chan") as messages:
        for n in range(100):
            await bus.notify("chan", str(n))
        async with asyncio.timeout(1):
            assert [await anext(messages) for _ in range(100)] == [str(n) for n in range(100)]


async def test_listener_wakes_on_notify() -> None:
    bus = InMemoryBus()
    async with bus.listen("chan") as messages:

        async def first() -> str:
            return await anext(messages)

        waiter = asyncio.create_task(first())
        await asyncio.sleep(0)
        assert not waiter.done()
        await bus.notify("chan", "go")
        async with asyncio.timeout(1):
            assert await waiter == "go"


def test_from_url() -> None:
    assert isinstance(InMemoryBus.from_url("memory://"), InMemoryBus)


async def test_close_is_harmless() -> None:
    bus = InMemoryBus()
    await bus.publish("r1", "values", b"1")
    await bus.close()
    await bus.end_stream("r1")
    assert len(await _drain(bus, "r1")) == 1


async def test_ended_streams_are_freed_by_a_timer_on_an_idle_bus() -> None:
    bus = InMemoryBus(retention_seconds=0.05)
    for n in range(3):
        await bus.publish(f"r{n}", "values", b"x" * 1000)
        await bus.end_stream(f"r{n}")
    assert _counts(bus) == (3, 0)
    assert bus.retained_bytes == 3000
    # Nothing else happens on the bus: only its timer can free them.
    async with asyncio.timeout(5):
        while _counts(bus) != (0, 0):  # noqa: ASYNC110 - the bus's own timer, nothing to await
            await asyncio.sleep(0.01)
    assert bus.retained_bytes == 0
    await bus.close()


async def test_ended_streams_are_bounded_by_bytes_oldest_first() -> None:
    bus = InMemoryBus(retention_seconds=3600, max_retained_bytes=2500)
    await bus.publish("live", "values", b"x" * 5000)  # live streams count against their own bound only
    await bus.publish("r0", "values", b"0" * 1000)
    reader = bus.subscribe("r0")
    assert (await anext(reader)).data == b"0" * 1000  # a client reading r0 when it is dropped
    await bus.end_stream("r0")
    for n in (1, 2):
        await bus.publish(f"r{n}", "values", b"%d" % n * 1000)
        await bus.end_stream(f"r{n}")
    assert _counts(bus) == (3, 0)  # live, r1, r2: r0 went first
    assert bus.retained_bytes == 2000
    assert [event.data for event in await _drain(bus, "r2")] == [b"2" * 1000]
    async with asyncio.timeout(5):
        assert [event async for event in reader] == []  # ... still sees its end
    await bus.close()
