"""`PostgresBus` against a real PostgreSQL: several instances (processes) on one database, one LISTEN
connection per bus, retention, outages.

The contract every bus shares is in `tests/conformance/test_bus_conformance.py`; this file covers
what only the PostgreSQL bus has. Each test gets a fresh database, migrated by the store (whose
migration `0002_events.sql` creates the event tables). Subscribers poll once a minute, so a lost
wake-up fails a test instead of hiding behind the polling fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from runplane.core.errors import InvalidInput, StoreUnavailable
from runplane.core.events import EventBus, StreamEvent
from runplane.events import open_bus
from runplane.events.postgres import PostgresBus
from runplane.events.resilient import ResilientBus
from runplane.stores.postgres.store import PostgresStore
from tests._services import postgres_database, require_postgres_url

pytestmark = pytest.mark.postgres

MakeBus = Callable[..., PostgresBus]


@pytest.fixture
def base_url() -> str:
    return require_postgres_url()


@pytest.fixture
def blank_url(base_url: str) -> Iterator[str]:
    """A fresh database, not migrated."""
    with postgres_database(base_url) as url:
        yield url


@pytest.fixture
async def url(blank_url: str) -> str:
    """A fresh database with the store's migrations applied."""
    async with PostgresStore.from_url(blank_url, min_size=1, max_size=1):
        pass
    return blank_url


@pytest.fixture
async def make_bus(url: str) -> AsyncIterator[MakeBus]:
    """Opens buses on the test's database (each is "another process"); closes them at the end."""
    opened: list[PostgresBus] = []

    def make(bus_url: str | None = None, **options: Any) -> PostgresBus:
        options.setdefault("poll_seconds", 60.0)
        bus = PostgresBus.from_url(bus_url or url, **options)
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


def _query(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _sessions(url: str, application_name: str) -> int:
    rows = _query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        _database(url),
        application_name,
    )
    return int(rows[0][0])


async def _drain(bus: EventBus, run_id: str, last_event_id: str | None = None) -> list[StreamEvent]:
    async with asyncio.timeout(10):
        return [event async for event in bus.subscribe(run_id, last_event_id)]


async def _next(hints: AsyncIterator[str], timeout: float = 5) -> str:
    async with asyncio.timeout(timeout):
        return await anext(hints)


async def _until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 10) -> None:
    """Poll state that has no event to await (server-side, or the dispatcher's counters)."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.01)


# -- several processes ------------------------------------------------------------------------------


async def test_live_events_and_hints_cross_instances(make_bus: MakeBus) -> None:
    worker, api = make_bus(), make_bus()
    got_first = asyncio.Event()

    async def subscriber() -> list[bytes]:
        received = []
        async for event in api.subscribe("r1"):
            received.append(event.data)
            got_first.set()
        return received

    async with asyncio.timeout(10), api.listen("runplane:done:r1") as done, worker.listen("cancel") as cancel:
        reader = asyncio.create_task(subscriber())
        await worker.publish("r1", "values", b"first")
        await got_first.wait()  # live, not replayed
        ids = [await worker.publish("r1", "values", b"%d" % n) for n in range(200)]
        await worker.end_stream("r1")
        await worker.notify("runplane:done:r1", "r1")
        await api.notify("cancel", "interrupt")
        assert await reader == [b"first", *(b"%d" % n for n in range(200))]
        assert await _next(done) == "r1"
        assert await _next(cancel) == "interrupt"
    assert [int(i) for i in ids] == list(range(2, 202))


async def test_resume_with_an_id_from_another_instance(make_bus: MakeBus) -> None:
    first, second = make_bus(), make_bus()
    ids = [await first.publish("r1", "values", b"%d" % n) for n in range(10)]
    await first.end_stream("r1")
    events = await _drain(second, "r1", ids[3])
    assert [event.id for event in events] == ids[4:]
    assert [event.data for event in events] == [b"%d" % n for n in range(4, 10)]


async def test_a_hint_sent_before_listening_elsewhere_is_never_delivered(make_bus: MakeBus) -> None:
    sender, receiver = make_bus(), make_bus()
    for round_ in range(20):
        await sender.notify("chan", f"old{round_}")
        async with receiver.listen("chan") as hints:
            await sender.notify("chan", f"new{round_}")
            assert await _next(hints) == f"new{round_}"


async def test_any_channel_name_routes_exactly(make_bus: MakeBus) -> None:
    # Channels travel in the payload of one PostgreSQL channel, length-prefixed.
    sender, receiver = make_bus(), make_bus()
    names = ["", "5:x", "runplane:cancel:1", "1", "snow \u2603 man", "h3:abc"]
    async with contextlib.AsyncExitStack() as stack:
        listeners = [await stack.enter_async_context(receiver.listen(name)) for name in names]
        for name in names:
            await sender.notify(name, f"{name}|msg:2")
        for name, hints in zip(names, listeners, strict=True):
            assert await _next(hints) == f"{name}|msg:2"


async def test_concurrent_publishers_on_two_instances_and_resumes_at_cuts(make_bus: MakeBus) -> None:
    one, two, reader_bus = make_bus(), make_bus(), make_bus()
    published: dict[str, bytes] = {}
    seen: list[StreamEvent] = []

    async def publisher(bus: PostgresBus, name: bytes) -> list[str]:
        ids = []
        for n in range(500):  # 1,000 back-to-back events in all, racing on one run
            data = b"%s-%d" % (name, n)
            event_id = await bus.publish("r1", "values", data)
            published[event_id] = data
            ids.append(event_id)
        return ids

    async def reader(after: str | None, stop_after: int | None) -> str | None:
        async for event in reader_bus.subscribe("r1", after):
            seen.append(event)
            if stop_after is not None and len(seen) == stop_after:
                return event.id  # disconnect, resume from here
        return None

    async with asyncio.timeout(30):
        publishing = asyncio.gather(publisher(one, b"a"), publisher(two, b"b"))
        last = None
        for stop_after in (1, 100, 333, 334, 700):  # while the events are being published
            last = await reader(last, stop_after)
        ids_a, ids_b = await publishing
        await one.end_stream("r1")
        last = await reader(last, 999)
        assert await reader(last, None) is None
    # Each publisher saw its own ids strictly increase; together they are exactly 1..1000.
    assert all(int(x) < int(y) for x, y in itertools.pairwise(ids_a))
    assert all(int(x) < int(y) for x, y in itertools.pairwise(ids_b))
    assert sorted(int(i) for i in ids_a + ids_b) == list(range(1, 1001))
    # The reader saw every event once, in id order, with the payload published under that id.
    assert [event.id for event in seen] == [str(n) for n in range(1, 1001)]
    assert all(published[event.id] == event.data for event in seen)


async def test_hundreds_of_listeners_and_subscribers_share_one_listen_connection(
    url: str, make_bus: MakeBus
) -> None:
    api, worker = make_bus(application_name="rp-api", max_connections=3), make_bus()
    entered = 0
    all_in = asyncio.Event()

    async def joiner(n: int) -> str:
        nonlocal entered
        async with api.listen(f"runplane:done:{n}") as hints:
            entered += 1
            if entered == 200:
                all_in.set()
            return await anext(hints)

    async def subscriber(n: int) -> list[bytes]:
        return [event.data async for event in api.subscribe(f"run{n}")]

    async with asyncio.timeout(30):
        joiners = [asyncio.create_task(joiner(n)) for n in range(200)]
        subscribers = [asyncio.create_task(subscriber(n)) for n in range(100)]
        await all_in.wait()
        assert _sessions(url, "rp-api-listen") == 1
        assert _sessions(url, "rp-api") <= 3
        for n in range(100):
            await worker.publish(f"run{n}", "values", b"%d" % n)
            await worker.end_stream(f"run{n}")
        for n in range(200):
            await worker.notify(f"runplane:done:{n}", f"done{n}")
        assert await asyncio.gather(*joiners) == [f"done{n}" for n in range(200)]
        assert await asyncio.gather(*subscribers) == [[b"%d" % n] for n in range(100)]
    assert _sessions(url, "rp-api-listen") == 1
    assert "keys=0" in repr(api)  # everyone left: nothing is routed any more


async def test_open_bus_maps_postgres_urls(url: str) -> None:
    with_store_params = url.replace("postgresql://", "postgres://", 1) + "?pool_max_size=20&pool_min_size=2"
    for bus_url in (url, with_store_params):
        bus = open_bus(bus_url)
        # A shared bus comes wrapped: its outages buffer events instead of failing a run.
        assert isinstance(bus, ResilientBus) and isinstance(bus.inner, PostgresBus)
        try:
            event_id = await bus.publish("r1", "values", b"x")
            await bus.end_stream("r1")
            assert [event.id for event in await _drain(bus, "r1")] == [event_id]
        finally:
            await bus.close()


# -- ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["1-2", "\u0661\u0662", " 1", "1 ", "+1", "99999999999999999999"])
async def test_only_ascii_decimal_ids_are_accepted(make_bus: MakeBus, bad: str) -> None:
    bus = make_bus()
    with pytest.raises(InvalidInput, match="Last-Event-ID"):
        await anext(bus.subscribe("r1", bad))


async def test_from_zero_and_far_future_ids(make_bus: MakeBus) -> None:
    bus = make_bus()
    ids = [await bus.publish("r1", "values", b"%d" % n) for n in range(3)]
    await bus.end_stream("r1")
    assert [event.id for event in await _drain(bus, "r1", "0")] == ids
    assert await _drain(bus, "r1", "9999999999999999999") == []  # beyond bigint: nothing follows


# -- retention --------------------------------------------------------------------------------------


async def test_events_beyond_max_events_are_trimmed(url: str, make_bus: MakeBus) -> None:
    bus = make_bus(max_events=10)
    ids = [await bus.publish("r1", "values", b"%d" % n) for n in range(50)]
    await bus.end_stream("r1")
    assert _query(url, "SELECT count(*) FROM run_events")[0][0] == 10
    assert [event.id for event in await _drain(bus, "r1")] == ids[-10:]
    # A client resuming from a trimmed event gets what is left, without a wait.
    assert [event.id for event in await _drain(bus, "r1", ids[5])] == ids[-10:]


async def test_trimming_is_amortized_but_bounded(url: str, make_bus: MakeBus) -> None:
    bus = make_bus(max_events=1000)
    assert bus.trim_every == 100
    for _ in range(1250):
        await bus.publish("r1", "values", b"")
    rows = _query(url, "SELECT count(*), min(seq) FROM run_events")[0]
    assert 1000 <= rows[0] < 1100
    assert rows[1] == 1250 - rows[0] + 1  # contiguous: only the oldest go


async def test_ended_and_idle_streams_expire(url: str, make_bus: MakeBus) -> None:
    bus = make_bus(retention_seconds=3600, idle_ttl_seconds=3600)
    first = await bus.publish("ended", "values", b"1")
    await bus.end_stream("ended")
    await bus.publish("abandoned", "values", b"1")  # its worker died: never ended
    await bus.publish("live", "values", b"1")
    assert await bus.expire() == 0
    _query(url, "UPDATE run_streams SET ended_at = ended_at - interval '2 hours' WHERE run_id = 'ended'")
    _query(
        url, "UPDATE run_streams SET updated_at = updated_at - interval '2 hours' WHERE run_id = 'abandoned'"
    )
    assert await bus.expire() == 2
    assert _query(url, "SELECT DISTINCT run_id FROM run_events") == [("live",)]
    # A client resuming on an expired stream is told it is over instead of waiting forever.
    assert await _drain(bus, "ended", first) == []


async def test_the_background_sweep_runs_at_most_every_cleanup_seconds(url: str, make_bus: MakeBus) -> None:
    bus = make_bus(retention_seconds=0, cleanup_seconds=3600)
    await bus.publish("r1", "values", b"1")
    sweep = bus._cleanup_task  # the first write started a sweep
    assert sweep is not None
    await sweep
    await bus.end_stream("r1")
    assert bus._cleanup_task is sweep
    assert _query(url, "SELECT count(*) FROM run_streams")[0][0] == 1  # not again within the hour
    await bus.expire()
    assert _query(url, "SELECT count(*) FROM run_streams")[0][0] == 0


# -- failures ---------------------------------------------------------------------------------------


async def test_missing_tables_name_the_fix(blank_url: str) -> None:
    bus = PostgresBus.from_url(blank_url)
    try:
        with pytest.raises(StoreUnavailable, match="runplane migrate"):
            await bus.publish("r1", "values", b"1")
    finally:
        await bus.close()


async def test_oversized_hints_and_run_ids_are_invalid_input(make_bus: MakeBus) -> None:
    bus = make_bus()
    with pytest.raises(InvalidInput):
        await bus.notify("chan", "x" * 8000)
    with pytest.raises(InvalidInput):
        await bus.publish("r" * 8000, "values", b"")
    await bus.notify("chan", "x" * 7000)  # a long hint that fits is fine


async def test_without_postgres_hints_are_dropped_and_events_fail_loudly(make_bus: MakeBus) -> None:
    bus = make_bus("postgresql://127.0.0.1:1/x?connect_timeout=1", confirm_timeout=0.3, pool_timeout=0.3)
    await bus.notify("chan", "lost")  # logged, not raised: hints are best effort
    async with asyncio.timeout(10):
        async with bus.listen("chan"):  # unconfirmed, but the caller can go on with its fallback
            pass
        with pytest.raises(StoreUnavailable):
            await bus.publish("r1", "values", b"1")
        with pytest.raises(StoreUnavailable):
            await bus.end_stream("r1")
        with pytest.raises(StoreUnavailable):
            await anext(bus.subscribe("r1"))


async def test_listeners_and_subscribers_recover_after_the_listen_connection_drops(
    base_url: str, url: str, make_bus: MakeBus
) -> None:
    bus, other = make_bus(application_name="rp-victim"), make_bus()
    received: list[bytes] = []
    got = asyncio.Event()

    async def subscriber() -> None:
        async for event in bus.subscribe("r1"):
            received.append(event.data)
            got.set()

    async with asyncio.timeout(20), bus.listen("chan") as hints:
        await other.publish("r1", "values", b"before")  # opens `other`'s pooled connection too
        reader = asyncio.create_task(subscriber())
        await got.wait()
        got.clear()
        # Keep the bus from reconnecting while it misses a wake-up (open connections stay up).
        alter = f'ALTER DATABASE "{_database(url)}" WITH ALLOW_CONNECTIONS %s'
        _query(base_url, alter % "false")
        try:
            _query(
                base_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                "rp-victim-listen",
            )
            await _until(lambda: not bus._hub.listening)
            await other.publish("r1", "values", b"during")  # its wake-up is lost for `bus`
        finally:
            _query(base_url, alter % "true")
        # The reconnection must make the subscriber look (it would poll only once a minute).
        await got.wait()
        assert bus._hub.connections == 2
        await other.notify("chan", "after")
        assert await _next(hints) == "after"
        await other.end_stream("r1")
        await reader
    assert received == [b"before", b"during"]


async def test_pooled_connections_closed_by_the_server_are_replaced(url: str, make_bus: MakeBus) -> None:
    bus = make_bus(application_name="rp-pool")
    await asyncio.gather(*(bus.publish(f"r{n}", "values", b"1") for n in range(3)))
    _query(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rp-pool'")
    await _until(lambda: _sessions(url, "rp-pool") == 0)
    # Every idle pooled connection is dead now; none of them reaches the caller.
    assert await bus.publish("r1", "values", b"2") == "2"


async def test_an_idle_listen_connection_is_pinged_and_kept(make_bus: MakeBus) -> None:
    bus, other = make_bus(health_check_seconds=0.05, confirm_timeout=2.0), make_bus()
    async with bus.listen("chan") as hints:
        rounds = bus._hub.barriers
        await _until(lambda: bus._hub.barriers >= rounds + 3)  # three pings came back
        assert bus._hub.connections == 1
        await other.notify("chan", "still here")
        assert await _next(hints) == "still here"


async def test_closing_the_bus_stops_waiting_subscribers(make_bus: MakeBus) -> None:
    bus = make_bus()
    reader = asyncio.create_task(_drain(bus, "r1"))
    await _until(lambda: "keys=1" in repr(bus) and bus._hub.listening)
    await bus.close()
    with pytest.raises(StoreUnavailable):
        await reader
    with pytest.raises(StoreUnavailable):
        await bus.publish("r1", "values", b"1")
    await bus.notify("chan")  # a no-op once closed
    await bus.close()  # idempotent
