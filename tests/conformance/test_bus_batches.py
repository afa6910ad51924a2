"""Batched writes keep the stream contract, on every bus: `ResilientBus.enqueue` over memory, Redis and
PostgreSQL (the path a worker's events take), and the shared buses' `publish_many` itself."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runplane.core.events import EventBus, StreamEvent
from runplane.events.batching import StreamBatch, SupportsBatchedHints, SupportsPublishMany
from runplane.events.resilient import ResilientBus
from tests.conformance import test_bus_conformance as bus_suite

# The bus suite's fixtures: every bus, and a second instance on the same backend ("another process").
open_bus, bus, other = bus_suite.open_bus, bus_suite.bus, bus_suite.other


async def _collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


def _order(event_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in event_id.split("-"))


def _shared(bus: EventBus) -> SupportsPublishMany:
    if not isinstance(bus, SupportsPublishMany):
        pytest.skip("an in-process bus has no batch write")
    return bus


async def test_enqueued_events_keep_order_ids_resume_and_latest_id(bus: EventBus, other: EventBus) -> None:
    writer = ResilientBus(bus)
    for n in range(700):
        await writer.enqueue("r1", "custom", b"%d" % n)
    direct = await writer.publish("r1", "values", b"direct")  # after the queued ones
    for n in range(700, 1200):
        await writer.enqueue("r1", "custom", b"%d" % n)
    await writer.flush("r1")
    latest = await other.latest_event_id("r1")
    await writer.end_stream("r1")

    events = await _collect(other.subscribe("r1"))
    expected = [b"%d" % n for n in range(700)] + [b"direct"] + [b"%d" % n for n in range(700, 1200)]
    assert [event.data for event in events] == expected
    ids = [_order(event.id) for event in events]
    assert ids == sorted(set(ids))  # strictly increasing, unique
    assert events[700].id == direct
    assert latest == events[-1].id
    resumed = await _collect(other.subscribe("r1", events[899].id))
    assert [event.data for event in resumed] == expected[900:]


async def test_a_join_from_now_sees_only_what_follows(bus: EventBus, other: EventBus) -> None:
    writer = ResilientBus(bus)
    for n in range(5):
        await writer.enqueue("r1", "custom", b"before%d" % n)
    now = await writer.latest_event_id("r1")  # what a joiner without Last-Event-ID starts after
    for n in range(3):
        await writer.enqueue("r1", "custom", b"after%d" % n)
    await writer.end_stream("r1")
    joined = await _collect(other.subscribe("r1", now))
    assert [event.data for event in joined] == [b"after0", b"after1", b"after2"]


async def test_publish_many_writes_several_runs_and_ends_in_one_call(bus: EventBus, other: EventBus) -> None:
    shared = _shared(bus)
    await bus.publish("a", "values", b"first")
    await shared.publish_many(
        [
            StreamBatch("a", [("custom", b"a1"), ("custom", b"a2")]),
            StreamBatch("b", [("custom", b"b1")], end=True),
            StreamBatch("c", [], end=True),  # a stream that never had an event
        ]
    )
    late = await bus.publish("b", "custom", b"late")  # after the end: dropped
    await bus.end_stream("a")

    a = await _collect(other.subscribe("a"))
    assert [event.data for event in a] == [b"first", b"a1", b"a2"]
    assert [_order(event.id) for event in a] == sorted({_order(event.id) for event in a})
    b = await _collect(other.subscribe("b"))
    assert [event.data for event in b] == [b"b1"]
    assert late == b[0].id
    assert await _collect(other.subscribe("c")) == []


async def test_publish_many_after_the_end_writes_nothing(bus: EventBus, other: EventBus) -> None:
    shared = _shared(bus)
    await bus.publish("a", "values", b"1")
    await bus.end_stream("a")
    await shared.publish_many([StreamBatch("a", [("custom", b"2")], end=True)])
    assert [event.data for event in await _collect(other.subscribe("a"))] == [b"1"]
    # In a call with other runs, only the ended run's batch is dropped.
    await shared.publish_many(
        [
            StreamBatch("b", [("custom", b"b1")]),
            StreamBatch("a", [("custom", b"3")]),
            StreamBatch("c", [], end=True),
        ]
    )
    await bus.end_stream("b")
    assert [event.data for event in await _collect(other.subscribe("a"))] == [b"1"]
    assert [event.data for event in await _collect(other.subscribe("b"))] == [b"b1"]
    assert await _collect(other.subscribe("c")) == []


async def test_subscribe_batches_yield_what_subscribe_does(bus: EventBus, other: EventBus) -> None:
    ids = [await bus.publish("r1", "custom", b"%d" % n) for n in range(600)]
    batches = other.subscribe_batches("r1")
    first = await anext(batches)  # everything published so far, in at most a few reads
    for n in range(600, 610):
        await bus.publish("r1", "custom", b"%d" % n)
    await bus.end_stream("r1")
    rest = [batch async for batch in batches]
    assert all(batch for batch in [first, *rest])
    events = [event for batch in [first, *rest] for event in batch]
    assert [event.data for event in events] == [b"%d" % n for n in range(610)]
    assert [event.id for event in events[:600]] == ids
    assert events == await _collect(other.subscribe("r1"))
    resumed = [event async for batch in other.subscribe_batches("r1", ids[99]) for event in batch]
    assert [event.data for event in resumed] == [b"%d" % n for n in range(100, 610)]


async def test_hints_sent_with_a_batch_are_heard_once_here_and_there(bus: EventBus, other: EventBus) -> None:
    if not isinstance(bus, SupportsBatchedHints):
        pytest.skip("this bus sends its hints alone")
    async with bus.listen("chan") as here, other.listen("chan") as there:
        hint = bus.hint_here("chan", "h1")
        assert await bus_suite._next(here) == "h1"  # at once, before anything is sent
        await bus.publish_many([StreamBatch("a", [("custom", b"1")], end=True)], [hint])
        assert await bus_suite._next(there) == "h1"
        # Its copy from the bus was dropped here: what is heard next is the next hint.
        await other.notify("chan", "h2")
        assert await bus_suite._next(here) == "h2"
        assert await bus_suite._next(there) == "h2"
        # Hints alone, without events.
        await bus.publish_many([], [bus.hint_here("chan", "h3")])
        assert await bus_suite._next(there) == "h3"
        assert await bus_suite._next(here) == "h3"
    assert [event.data for event in await _collect(other.subscribe("a"))] == [b"1"]


async def test_a_resilient_bus_delivers_hints_here_and_there(bus: EventBus, other: EventBus) -> None:
    writer = ResilientBus(bus)
    async with writer.listen("done") as here, other.listen("done") as there:
        await writer.enqueue("r1", "custom", b"x")
        await writer.notify("done", "r1")  # as a run's end: its done hint, then its end mark
        await writer.end_stream("r1")
        assert await bus_suite._next(here) == "r1"
        assert await bus_suite._next(there) == "r1"
        await other.notify("done", "r2")
        assert await bus_suite._next(here) == "r2"  # not a second copy of "r1"
    assert [event.data for event in await _collect(other.subscribe("r1"))] == [b"x"]
    await writer.close()


async def test_equal_hints_in_one_batch_leave_no_echo_behind(bus: EventBus, other: EventBus) -> None:
    # PostgreSQL folds a transaction's equal notifications into one: one copy of the two comes
    # back, and the other's echo must not be waited for (it would swallow a later equal hint).
    if not isinstance(bus, SupportsBatchedHints):
        pytest.skip("this bus sends its hints alone")
    async with bus.listen("chan") as here, other.listen("chan") as there:
        hints = [bus.hint_here("chan", "same"), bus.hint_here("chan", "same")]
        assert [await bus_suite._next(here), await bus_suite._next(here)] == ["same", "same"]
        await bus.publish_many([], hints)
        assert await bus_suite._next(there) == "same"
        await other.notify("chan", "same")  # another process's: heard here, not taken for an echo
        assert await bus_suite._next(here) == "same"
