"""The `EventBus` contract, run against every bus: `InMemoryBus` (the reference), `RedisBus` and
`PostgresBus`.

Redis needs `RUNPLANE_TEST_REDIS_URL`; each test gets its own key prefix and deletes only that. Its
subscribers poll only once a minute here, so a lost wake-up fails a test instead of hiding behind
the polling fallback. `other` is a second instance on the same backend ("another process"); for the
memory bus it is the same object. `PostgresBus` (with `RUNPLANE_TEST_POSTGRES_URL`) polls as rarely;
its tests share the session's conformance database, emptied before each test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from runplane.core.errors import InvalidInput
from runplane.core.events import EventBus, StreamEvent
from runplane.events.memory import InMemoryBus
from tests._services import require_redis_url

OpenBus = Callable[[], Awaitable[EventBus]]

BUS_PARAMS = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


async def _delete_prefix(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=BUS_PARAMS)
async def open_bus(request: pytest.FixtureRequest) -> AsyncIterator[OpenBus]:
    """Opens bus instances sharing one backend (one per call for Redis; always the same in memory)."""
    if request.param == "memory":
        bus = InMemoryBus()

        async def same() -> EventBus:
            return bus

        yield same
        await bus.close()
        return
    if request.param == "postgres":
        async for opener in _postgres_buses(request):
            yield opener
        return
    url = require_redis_url()
    # Imported here, not at the top: redis-py is an optional extra and the memory half must run without it.
    from runplane.events.redis import RedisBus

    prefix = f"rptest-{uuid.uuid4().hex[:12]}"
    opened: list[EventBus] = []

    async def another() -> EventBus:
        instance = RedisBus.from_url(url, prefix=prefix, poll_seconds=60.0)
        opened.append(instance)
        return instance

    try:
        yield another
    finally:
        for instance in opened:
            await instance.close()
        await _delete_prefix(url, prefix)


async def _postgres_buses(request: pytest.FixtureRequest) -> AsyncIterator[OpenBus]:
    """`PostgresBus` instances on the session's emptied conformance database (see conftest)."""
    databases = request.getfixturevalue("postgres_databases")
    if databases is None:
        pytest.skip("postgres: RUNPLANE_TEST_POSTGRES_URL is not set")
    from runplane.events.postgres import PostgresBus
    from runplane.stores.postgres.store import PostgresStore

    url = databases.fresh()
    async with PostgresStore.from_url(url, min_size=1, max_size=1):
        pass  # applies the migrations, which create the event tables
    opened: list[EventBus] = []

    async def another() -> EventBus:
        instance = PostgresBus.from_url(url, poll_seconds=60.0)
        opened.append(instance)
        return instance

    try:
        yield another
    finally:
        for instance in opened:
            await instance.close()


@pytest.fixture
async def bus(open_bus: OpenBus) -> EventBus:
    return await open_bus()


@pytest.fixture
async def other(open_bus: OpenBus, bus: EventBus) -> EventBus:
    return await open_bus()


def _order(event_id: str) -> tuple[int, ...]:
    """Ids compare as their numeric parts: `"12"` (memory) and `"1700000000000-3"` (Redis) alike."""
    return tuple(int(part) for part in event_id.split("-"))


async def _drain(bus: EventBus, run_id: str, last_event_id: str | None = None) -> list[StreamEvent]:
    async with asyncio.timeout(10):
        return [event async for event in bus.subscribe(run_id, last_event_id)]


async def _publish_many(bus: EventBus, run_id: str, count: int) -> list[str]:
    return [await bus.publish(run_id, "custom", b'{"n": %d}' % n) for n in range(count)]


async def test_ids_are_strictly_increasing_per_run_even_back_to_back(bus: EventBus) -> None:
    ids = await _publish_many(bus, "r1", 1000)  # far more than one per millisecond
    assert len(set(ids)) == 1000
    assert all(_order(a) < _order(b) for a, b in itertools.pairwise(ids))
    # Another run has its own sequence, and publishing there does not disturb this one.
    await bus.publish("r2", "values", b"{}")
    later = await bus.publish("r1", "values", b"{}")
    assert _order(later) > _order(ids[-1])


async def test_replay_from_the_start_and_from_cuts_has_no_gap_and_no_duplicate(bus: EventBus) -> None:
    ids = await _publish_many(bus, "r1", 1000)
    await bus.end_stream("r1")
    expected = [b'{"n": %d}' % n for n in range(1000)]
    for last in (None, ""):
        events = await _drain(bus, "r1", last)
        assert [event.id for event in events] == ids
        assert [event.data for event in events] == expected
        assert {event.event for event in events} == {"custom"}
    for cut in (0, 1, 250, 998, 999):
        events = await _drain(bus, "r1", ids[cut])
        assert [event.id for event in events] == ids[cut + 1 :]
        assert [event.data for event in events] == expected[cut + 1 :]


async def test_a_client_resuming_at_cuts_while_events_stream_sees_each_event_once(
    bus: EventBus, other: EventBus
) -> None:
    published: list[str] = []
    seen: list[str] = []

    async def publisher() -> None:
        for n in range(1000):
            published.append(await bus.publish("r1", "values", b"%d" % n))
            if n % 100 == 0:
                await asyncio.sleep(0)  # let the reader interleave with bursts
        await bus.end_stream("r1")

    async def reader(after: str | None, stop_after: int | None) -> str | None:
        async for event in other.subscribe("r1", after):
            seen.append(event.id)
            if stop_after is not None and len(seen) == stop_after:
                return event.id  # the client disconnects here and resumes with this Last-Event-ID
        return None

    async with asyncio.timeout(20):
        publishing = asyncio.create_task(publisher())
        last = None
        for stop_after in (1, 137, 500, 501, 999, None):
            last = await reader(last, stop_after)
        await publishing
    assert seen == published
    assert len(seen) == 1000


async def test_live_events_reach_every_subscriber(bus: EventBus, other: EventBus) -> None:
    first_seen = [asyncio.Event() for _ in range(4)]

    async def subscriber(index: int, source: EventBus) -> list[bytes]:
        received = []
        async for event in source.subscribe("r1"):
            received.append(event.data)
            first_seen[index].set()
        return received

    async with asyncio.timeout(10):
        readers = [asyncio.create_task(subscriber(i, (bus, other)[i % 2])) for i in range(4)]
        await bus.publish("r1", "values", b"0")
        for seen in first_seen:
            await seen.wait()  # everyone is now waiting for live events
        for n in range(1, 200):
            await bus.publish("r1", "values", b"%d" % n)
        await bus.end_stream("r1")
        results = await asyncio.gather(*readers)
    for received in results:
        assert received == [b"%d" % n for n in range(200)]


async def test_end_stream_stops_subscribers_that_are_waiting(bus: EventBus, other: EventBus) -> None:
    got_one = asyncio.Event()

    async def subscriber() -> list[str]:
        ids = []
        async for event in other.subscribe("r1"):
            ids.append(event.id)
            got_one.set()
        return ids

    async with asyncio.timeout(10):
        reader = asyncio.create_task(subscriber())
        first = await bus.publish("r1", "values", b"1")
        await got_one.wait()
        assert not reader.done()
        await bus.end_stream("r1")
        await bus.end_stream("r1")  # idempotent
        assert await reader == [first]


async def test_end_stream_without_events_stops_subscribers(bus: EventBus, other: EventBus) -> None:
    async with asyncio.timeout(10):
        early = asyncio.create_task(_drain(other, "r1"))
        await bus.end_stream("r1")
        assert await early == []
        assert await _drain(other, "r1") == []


async def test_resuming_an_ended_stream_after_its_last_event_returns_at_once(bus: EventBus) -> None:
    ids = await _publish_many(bus, "r1", 3)
    await bus.end_stream("r1")
    assert await _drain(bus, "r1", ids[-1]) == []
    assert [event.id for event in await _drain(bus, "r1", ids[0])] == ids[1:]


async def test_publishing_after_the_end_is_dropped(bus: EventBus, other: EventBus) -> None:
    first = await bus.publish("r1", "values", b"1")
    await bus.end_stream("r1")
    late = await other.publish("r1", "values", b"late")
    assert _order(late) <= _order(first)  # not a new event
    assert [event.data for event in await _drain(other, "r1")] == [b"1"]


async def test_streams_are_separate_per_run(bus: EventBus) -> None:
    await bus.publish("r1", "values", b"one")
    await bus.publish("r2", "values", b"two")
    await bus.end_stream("r1")
    assert [event.data for event in await _drain(bus, "r1")] == [b"one"]
    await bus.end_stream("r2")
    assert [event.data for event in await _drain(bus, "r2")] == [b"two"]


async def test_payloads_and_event_names_round_trip_exactly(bus: EventBus) -> None:
    payloads = [b"", b"\x00\xff\xfe binary", "snowman \u2603".encode(), b"x" * 200_000]
    names = ["values", "messages/partial", "end", "__end__"]
    ids = [await bus.publish("r1", name, data) for name, data in zip(names, payloads, strict=True)]
    await bus.end_stream("r1")
    events = await _drain(bus, "r1")
    assert events == [
        StreamEvent(name, data, id) for name, data, id in zip(names, payloads, ids, strict=True)
    ]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", " 2x", "0x10", "1-2-3", "--1", "1-"])
async def test_invalid_last_event_id_raises_before_anything_is_yielded(bus: EventBus, bad: str) -> None:
    await bus.publish("r1", "values", b"1")
    async with asyncio.timeout(5):
        with pytest.raises(InvalidInput, match="Last-Event-ID"):
            await anext(bus.subscribe("r1", bad))


async def test_cancelling_one_subscriber_leaves_the_others_running(bus: EventBus, other: EventBus) -> None:
    started = asyncio.Event()

    async def doomed() -> None:
        async for _event in other.subscribe("r1"):
            started.set()

    async with asyncio.timeout(10):
        keeper = asyncio.create_task(_drain(other, "r1"))
        victim = asyncio.create_task(doomed())
        await bus.publish("r1", "values", b"1")
        await started.wait()
        victim.cancel()
        with pytest.raises(asyncio.CancelledError):
            await victim
        await bus.publish("r1", "values", b"2")
        await bus.end_stream("r1")
        assert [event.data for event in await keeper] == [b"1", b"2"]


async def _first_event(bus: EventBus, run_id: str) -> StreamEvent:
    events = bus.subscribe(run_id)
    assert isinstance(events, AsyncGenerator)  # every bus's subscription is one: it can be closed
    async with contextlib.aclosing(events):
        return await anext(events)


async def test_a_call_cancelled_at_any_step_ends_cancelled(bus: EventBus, other: EventBus) -> None:
    # Cancelling a task in the middle of a bus call must cancel it, wherever the call is. A swallowed
    # cancellation lets the caller run on: a cancelled subscriber goes back to waiting for events, and
    # whoever awaits it (the test above, an SSE handler tearing down) hangs. Cutting after 0 to 11 loop
    # steps lands on each await up to the reply; on a connection that is ready, the driver's socket
    # write is at step 1 (redis-py's `wait_for` around it dropped such a cancel on Python 3.11).
    await bus.publish("r1", "values", b"0")
    calls: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
        "publish": lambda: bus.publish("r1", "values", b"x"),
        "end_stream": lambda: bus.end_stream("r2"),
        "notify": lambda: bus.notify("chan", "m"),
        "subscribe": lambda: _first_event(other, "r1"),
    }
    async with asyncio.timeout(30):
        for name, call in calls.items():
            for steps in range(12):
                await call()  # the cut below may cost a connection: start each round with one ready
                task = asyncio.create_task(call())
                for _ in range(steps):
                    await asyncio.sleep(0)
                if task.cancel():
                    with pytest.raises(asyncio.CancelledError):
                        await task
                        pytest.fail(f"{name} cancelled after {steps} loop steps returned normally")
                else:
                    await task


async def _next(hints: AsyncIterator[str]) -> str:
    async with asyncio.timeout(5):
        return await anext(hints)


async def test_notify_reaches_every_listener_of_the_channel_only(bus: EventBus, other: EventBus) -> None:
    await bus.notify("chan", "nobody hears this")
    async with (
        bus.listen("chan") as first,
        other.listen("chan") as second,
        other.listen("other-chan") as unrelated,
    ):
        await bus.notify("chan", "a")
        await other.notify("chan")  # the empty default message
        await bus.notify("other-chan", "z")
        # Hints of one sender keep their order; a process hears its own at once, so hints of two
        # senders may interleave differently in each.
        assert sorted([await _next(first), await _next(first)]) == ["", "a"]
        assert sorted([await _next(second), await _next(second)]) == ["", "a"]
        # "z" is the first thing on the unrelated channel: nothing from "chan" leaked into it.
        assert await _next(unrelated) == "z"
    await bus.notify("chan", "after everyone left")  # harmless


async def test_a_hint_sent_in_this_process_is_heard_here_once(bus: EventBus, other: EventBus) -> None:
    """A shared bus hands a hint to this process's listeners when it is sent, and drops its copy
    coming back from Redis or PostgreSQL: heard once, here as in the other process."""
    async with bus.listen("chan") as here, other.listen("chan") as there:
        for message in ("a", "b", "a"):
            await bus.notify("chan", message)
        assert [await _next(there) for _ in range(3)] == ["a", "b", "a"]
        # Sent after them, so it reaches `here` behind the copies of "a", "b", "a".
        await other.notify("chan", "last")
        assert [await _next(here) for _ in range(4)] == ["a", "b", "a", "last"]
        assert await _next(there) == "last"
        await bus.notify("chan", "after")
        assert await _next(here) == "after"


async def test_listening_before_reading_never_misses_a_hint(bus: EventBus, other: EventBus) -> None:
    # The join pattern: listen, read the store, then wait. A notify sent right after `listen` was
    # entered (the writer committed just after our read) must arrive, every time.
    for round_ in range(30):
        channel = f"done:{round_}"
        async with bus.listen(channel) as hints:
            await other.notify(channel, f"m{round_}")
            assert await _next(hints) == f"m{round_}"


async def test_many_listeners_of_many_channels(bus: EventBus, other: EventBus) -> None:
    async with asyncio.timeout(10):
        ready = asyncio.Event()
        entered = 0

        async def listener(channel: str) -> str:
            nonlocal entered
            async with bus.listen(channel) as hints:
                entered += 1
                if entered == 50:
                    ready.set()
                return await anext(hints)

        tasks = [asyncio.create_task(listener(f"c{n % 10}")) for n in range(50)]
        await ready.wait()
        for n in range(10):
            await other.notify(f"c{n}", f"m{n}")
        assert await asyncio.gather(*tasks) == [f"m{n % 10}" for n in range(50)]


async def test_a_channel_can_be_listened_to_again_after_everyone_left(bus: EventBus, other: EventBus) -> None:
    for round_ in range(5):
        async with bus.listen("chan") as hints:
            await other.notify("chan", str(round_))
            assert await _next(hints) == str(round_)


async def test_latest_event_id_subscribes_from_now_on(bus: EventBus, other: EventBus) -> None:
    """A join without Last-Event-ID hears only what comes next: it subscribes after the newest id."""
    assert await bus.latest_event_id("fresh") is None
    ids = await _publish_many(bus, "tail", 3)
    latest = await other.latest_event_id("tail")
    assert latest == ids[-1]
    live = other.subscribe("tail", latest)
    first = asyncio.ensure_future(anext(live))
    later = await bus.publish("tail", "custom", b'{"n": 99}')
    assert (await asyncio.wait_for(first, 10)).id == later
    await bus.end_stream("tail")
    # The end mark is not an event: the newest id stays the last event's, and a subscription
    # after it ends at once instead of waiting.
    assert await other.latest_event_id("tail") == later
    assert await _drain(other, "tail", later) == []
    async with asyncio.timeout(10):
        assert [event async for event in live] == []
