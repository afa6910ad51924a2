"""`RedisBus` against a real Redis: several processes, connection bounds, expiry, outages.

The contract every bus shares is in `tests/conformance/test_bus_conformance.py`; this file covers
what only a networked bus has. Each test uses its own key prefix and deletes only that. A small
in-process TCP proxy stands between some buses and Redis, to delay or cut their traffic.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from runplane.core.errors import InvalidInput, StoreUnavailable
from runplane.core.events import StreamEvent
from runplane.events import open_bus
from runplane.events.redis import RedisBus, parse_stream_id
from runplane.events.resilient import ResilientBus
from tests._services import require_redis_url

pytestmark = pytest.mark.redis

MakeBus = Callable[..., RedisBus]


@pytest.fixture
def url() -> str:
    return require_redis_url()


@pytest.fixture
def prefix() -> str:
    return f"rptest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def admin(url: str, prefix: str) -> AsyncIterator[Redis]:
    """A plain client for looking at Redis directly; deletes the test's keys at the end."""
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
async def make_bus(url: str, prefix: str, admin: Redis) -> AsyncIterator[MakeBus]:
    """Opens buses on the test's prefix (each is "another process"); closes them at the end."""
    opened: list[RedisBus] = []

    def make(bus_url: str | None = None, **options: object) -> RedisBus:
        options.setdefault("prefix", prefix)
        options.setdefault("poll_seconds", 60.0)  # a lost wake-up must fail, not hide behind polling
        bus = RedisBus.from_url(bus_url or url, **options)  # type: ignore[arg-type]
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.close()


class Proxy:
    """A TCP proxy to Redis that can delay what clients send and cut every connection."""

    def __init__(self, target: str, delay: float = 0.0) -> None:
        parts = urlsplit(target)
        self._target = target
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.delay = delay
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        #: Cleared while "Redis is down": new connections wait instead of reaching Redis.
        self.up = asyncio.Event()
        self.up.set()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return urlunsplit(urlsplit(self._target)._replace(netloc=f"127.0.0.1:{port}"))

    def cut(self) -> None:
        """Drop every open connection, as a Redis restart or a network blip would."""
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self.up.wait()
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._writers |= {writer, up_writer}
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer, self.delay)),
            asyncio.create_task(self._pipe(up_reader, writer, 0.0)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, chunk = await chunks.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - loop.time()))
                writer.write(chunk)

        forwarding = asyncio.create_task(forward())
        try:
            while chunk := await reader.read(65536):
                chunks.put_nowait((loop.time() + delay, chunk))
            chunks.put_nowait((0.0, b""))
            await forwarding
        except (ConnectionError, OSError):
            pass
        finally:
            forwarding.cancel()
            writer.close()


async def _drain(
    bus: RedisBus, run_id: str, last_event_id: str | None = None, timeout: float = 10
) -> list[StreamEvent]:
    async with asyncio.timeout(timeout):
        return [event async for event in bus.subscribe(run_id, last_event_id)]


async def _next(hints: AsyncIterator[str], timeout: float = 5) -> str:
    async with asyncio.timeout(timeout):
        return await anext(hints)


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    """Poll Redis-side state, which has no event to await."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 (the state is in Redis: nothing to await)
            await asyncio.sleep(0.01)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- several processes ------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from runplane.events.redis import RedisBus

    async def main(url, prefix):
        bus = RedisBus.from_url(url, prefix=prefix)
        print(json.dumps({"id": await bus.publish("r1", "values", b"first")}), flush=True)
        sys.stdin.readline()  # the parent has seen "first" live
        ids = [await bus.publish("r1", "values", b"%d" % n) for n in range(200)]
        await bus.end_stream("r1")
        await bus.notify("runplane:done:r1", "r1")
        print(json.dumps({"ids": ids}), flush=True)
        await bus.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
async def test_another_process_publishes_live_events_and_hints(
    url: str, prefix: str, make_bus: MakeBus
) -> None:
    bus = make_bus()
    got_first = asyncio.Event()
    received: list[StreamEvent] = []

    async def subscriber() -> None:
        async for event in bus.subscribe("r1"):
            received.append(event)
            got_first.set()

    async with asyncio.timeout(30), bus.listen("runplane:done:r1") as done:
        reading = asyncio.create_task(subscriber())
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            url,
            prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        first_id = json.loads(await child.stdout.readline())["id"]
        await got_first.wait()
        assert [event.id for event in received] == [first_id]
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        ids = json.loads(await child.stdout.readline())["ids"]
        assert await child.wait() == 0
        await reading
        assert await _next(done) == "r1"
    assert [event.id for event in received] == [first_id, *ids]
    assert [event.data for event in received[1:]] == [b"%d" % n for n in range(200)]
    # A client that was reading from process A resumes on B from the last id it got.
    assert [event.id for event in await _drain(make_bus(), "r1", ids[99])] == ids[100:]


async def test_a_subscriber_on_one_bus_resumes_with_an_id_from_another(make_bus: MakeBus) -> None:
    a, b = make_bus(), make_bus()
    ids = [await a.publish("r1", "values", b"%d" % n) for n in range(20)]
    tail = asyncio.create_task(_drain(b, "r1", ids[9]))
    more = [await a.publish("r1", "values", b"%d" % n) for n in range(20, 30)]
    await a.end_stream("r1")
    assert [event.id for event in await tail] == ids[10:] + more


async def test_open_bus_maps_redis_urls(url: str) -> None:
    bus = open_bus(url)
    try:
        # A shared bus comes wrapped: its outages buffer events instead of failing a run.
        assert isinstance(bus, ResilientBus) and isinstance(bus.inner, RedisBus)
        assert bus.inner.prefix == "runplane"
    finally:
        await bus.close()


# -- connections ------------------------------------------------------------------------------------


async def test_hundreds_of_listeners_and_subscribers_share_a_bounded_set_of_connections(
    make_bus: MakeBus, admin: Redis
) -> None:
    name = f"rptest-{uuid.uuid4().hex[:12]}"
    bus = make_bus(max_connections=8, client_name=name)
    publisher = make_bus()
    entered = asyncio.Event()
    count = 0

    async def listener(n: int) -> str:
        nonlocal count
        async with bus.listen(f"runplane:done:{n}") as hints:
            count += 1
            if count == 200:
                entered.set()
            return await anext(hints)

    async with asyncio.timeout(20):
        listeners = [asyncio.create_task(listener(n)) for n in range(200)]
        subscribers = [asyncio.create_task(_drain(bus, f"run{n}", timeout=20)) for n in range(200)]
        await entered.wait()
        for n in range(200):
            await publisher.publish(f"run{n}", "values", b"%d" % n)
        for n in range(200):
            await publisher.notify(f"runplane:done:{n}", str(n))
            await publisher.end_stream(f"run{n}")
        assert await asyncio.gather(*listeners) == [str(n) for n in range(200)]
        streams = await asyncio.gather(*subscribers)
    assert [[event.data for event in events] for events in streams] == [[b"%d" % n] for n in range(200)]
    clients = [client for client in await admin.client_list() if client.get("name") == name]
    assert 1 < len(clients) <= 8 + 1  # the bounded pool plus the one pub/sub connection


async def test_a_cancelled_subscriber_or_listener_releases_its_subscription(
    make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    bus = make_bus()
    wake = f"{prefix}:wake:r1"
    hint = f"{prefix}:hint:chan"

    async def numsub(channel: str) -> int:
        return int(dict(await admin.pubsub_numsub(channel))[channel.encode()])

    started = asyncio.Event()

    async def subscriber() -> None:
        async for _event in bus.subscribe("r1"):
            started.set()

    reader = asyncio.create_task(subscriber())
    await bus.publish("r1", "values", b"1")
    async with asyncio.timeout(5):
        await started.wait()
    async with bus.listen("chan"):
        assert await numsub(wake) == 1
        assert await numsub(hint) == 1
        assert "channels=2" in repr(bus)
    reader.cancel()  # the SSE client went away
    with pytest.raises(asyncio.CancelledError):
        await reader

    async def released() -> bool:
        return await numsub(wake) == 0 and await numsub(hint) == 0

    await _until(released)
    assert "channels=0" in repr(bus)


async def test_listen_returns_only_once_redis_confirmed_the_subscription(
    url: str, make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    # Everything this bus sends reaches Redis 100 ms late; the notifier is direct. Had `listen`
    # returned before Redis processed SUBSCRIBE, the notify would overtake it and be lost.
    async with Proxy(url, delay=0.1) as proxy:
        slow, fast = make_bus(proxy.url), make_bus()
        for round_ in range(3):
            async with slow.listen(f"chan{round_}") as hints:
                await fast.notify(f"chan{round_}", "now")
                assert await _next(hints) == "now"
        # Same for a stream subscriber: an event published right after its first (empty) read.
        reader = asyncio.create_task(_drain(slow, "r1"))
        await _until(lambda: _subscribed_to(admin, prefix, "r1"))
        first = await fast.publish("r1", "values", b"1")
        await fast.end_stream("r1")
        assert [event.id for event in await reader] == [first]


async def test_a_process_hears_its_own_hints_without_waiting_for_redis(
    make_bus: MakeBus, admin: Redis
) -> None:
    """A worker and an API in one process: the hint reaches the local listener when it is sent,
    while Redis still holds the PUBLISH (paused here); its copy from Redis is not heard again."""
    bus = make_bus()
    async with bus.listen("chan") as hints:
        await admin.execute_command("CLIENT", "PAUSE", "10000", "WRITE")  # PUBLISH waits
        try:
            notifying = asyncio.create_task(bus.notify("chan", "now"))
            assert await _next(hints) == "now"
            assert not notifying.done()
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
        await notifying
        await make_bus().notify("chan", "later")  # behind the copy of "now"
        assert await _next(hints) == "later"


async def _subscribed_to(admin: Redis, prefix: str, run_id: str) -> bool:
    result = await admin.pubsub_numsub(f"{prefix}:wake:{run_id}")
    return int(result[0][1]) > 0


# -- ids, trimming, expiry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["5", "0", "\u0661-1", "1-\u0661", "+1-1", "1-0 ", "1" * 21 + "-0", f"{2**64}-0"]
)
async def test_only_redis_stream_ids_are_accepted(make_bus: MakeBus, bad: str) -> None:
    with pytest.raises(InvalidInput, match="Last-Event-ID"):
        parse_stream_id(bad)
    bus = make_bus()
    with pytest.raises(InvalidInput):
        await anext(bus.subscribe("r1", bad))


def test_parse_stream_id() -> None:
    assert parse_stream_id(None) == parse_stream_id("") == (0, 0)
    assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id(f"{2**64 - 1}-0") == (2**64 - 1, 0)
    with pytest.raises(InvalidInput):
        parse_stream_id(f"{2**64 - 1}-{2**64 - 1}")  # has no successor


async def test_from_zero_and_far_future_ids(make_bus: MakeBus) -> None:
    bus = make_bus()
    ids = [await bus.publish("r1", "values", b"%d" % n) for n in range(3)]
    await bus.end_stream("r1")
    assert [event.id for event in await _drain(bus, "r1", "0-0")] == ids
    assert await _drain(bus, "r1", "99999999999999-0") == []  # past the end of an ended stream


async def test_replay_keeps_at_least_the_memory_bus_default_of_10000_events(
    make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    bus = make_bus()
    assert bus.max_events == 10_000
    for start in range(0, 10_500, 500):
        await asyncio.gather(*(bus.publish("r1", "values", b"%d" % n) for n in range(start, start + 500)))
    assert await admin.xlen(f"{prefix}:stream:r1") >= 10_000
    # approximate trimming happened (Redis drops whole nodes) but never below the bound
    assert await admin.xlen(f"{prefix}:stream:r1") < 10_500


async def test_a_client_resuming_from_a_trimmed_event_gets_what_is_left(make_bus: MakeBus) -> None:
    bus = make_bus(max_events=10)
    ids = [await bus.publish("r1", "values", b"%d" % n) for n in range(500)]
    await bus.end_stream("r1")
    kept = [event.id for event in await _drain(bus, "r1", ids[0])]
    assert 10 <= len(kept) < 500
    assert kept == ids[-len(kept) :]  # a contiguous tail, no gap inside it


async def test_streams_expire(make_bus: MakeBus, admin: Redis, prefix: str) -> None:
    bus = make_bus(retention_seconds=120, idle_ttl_seconds=3600)
    key = f"{prefix}:stream:r1"
    await bus.publish("r1", "values", b"1")
    assert 3590 <= await admin.ttl(key) <= 3600  # an abandoned stream dies eventually
    await bus.end_stream("r1")
    assert 110 <= await admin.ttl(key) <= 120  # an ended one after the retention window
    await bus.end_stream("r1")
    await bus.publish("r1", "values", b"late")
    assert await admin.ttl(key) <= 120  # neither a repeated end nor a late publish extends it


async def test_a_stream_that_is_not_there_yet_is_waited_for_but_an_expired_one_ends(
    make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    bus = make_bus(poll_seconds=0.2)
    early = asyncio.create_task(_drain(bus, "r1"))  # the run has not published anything yet
    await _until(lambda: _subscribed_to(admin, prefix, "r1"))
    first = await bus.publish("r1", "values", b"1")
    await bus.end_stream("r1")
    assert [event.id for event in await early] == [first]
    await admin.delete(f"{prefix}:stream:r1")  # retention elapsed
    assert await _drain(bus, "r1", first, timeout=1) == []  # a resuming client is not left hanging
    # A worker that vanished never ends its stream; once the idle TTL drops it, readers stop.
    second = await bus.publish("r2", "values", b"2")
    got = asyncio.Event()

    async def reader() -> list[str]:
        ids = []
        async for event in bus.subscribe("r2"):
            ids.append(event.id)
            got.set()
        return ids

    reading = asyncio.create_task(reader())
    async with asyncio.timeout(5):
        await got.wait()
        await admin.delete(f"{prefix}:stream:r2")
        assert await reading == [second]


# -- failures ---------------------------------------------------------------------------------------


async def test_without_redis_hints_are_dropped_and_events_fail_loudly(url: str, make_bus: MakeBus) -> None:
    dead = urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{_free_port()}"))
    bus = make_bus(dead, confirm_timeout=0.5)
    await bus.notify("chan", "lost")  # logged, not raised: hints are best effort
    async with asyncio.timeout(5):
        async with bus.listen("chan"):  # unconfirmed, but the caller can go on with its fallback
            pass
        with pytest.raises(StoreUnavailable):
            await bus.publish("r1", "values", b"1")
        with pytest.raises(StoreUnavailable):
            await bus.end_stream("r1")
        with pytest.raises(StoreUnavailable):
            await anext(bus.subscribe("r1"))


async def test_listeners_and_subscribers_recover_after_the_connection_drops(
    url: str, make_bus: MakeBus
) -> None:
    async with Proxy(url) as proxy:
        bus, direct = make_bus(proxy.url), make_bus()
        received: list[bytes] = []
        got = asyncio.Event()

        async def subscriber() -> None:
            async for event in bus.subscribe("r1"):
                received.append(event.data)
                got.set()

        async with asyncio.timeout(15), bus.listen("chan") as hints:
            # Published before the subscriber starts, so that once it has yielded the event it is
            # idle, waiting for a wake-up (not in the middle of a read that would see "during").
            await direct.publish("r1", "values", b"before")
            reader = asyncio.create_task(subscriber())
            await got.wait()
            got.clear()
            proxy.up.clear()
            proxy.cut()
            # Published while the pub/sub connection is down: its wake-up is lost, so the reconnect
            # must make the subscriber look (it would poll only once a minute).
            await direct.publish("r1", "values", b"during")
            proxy.up.set()
            await got.wait()
            # Hints sent while disconnected are lost (best effort); once resubscribed they flow again.
            while True:
                await direct.notify("chan", "ping")
                try:
                    assert await _next(hints, timeout=0.2) == "ping"
                    break
                except TimeoutError:
                    continue
            await direct.end_stream("r1")
            await reader
        assert received == [b"before", b"during"]


async def test_a_lost_wake_up_costs_only_the_polling_interval(
    make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    bus = make_bus(poll_seconds=0.2)
    reader = asyncio.create_task(_drain(bus, "r1"))
    await _until(lambda: _subscribed_to(admin, prefix, "r1"))
    # Appended behind the bus's back: no wake-up is published.
    await admin.xadd(f"{prefix}:stream:r1", {"event": "values", "data": b"sneaky"})
    await admin.xadd(f"{prefix}:stream:r1", {"end": "1"})
    events = await reader
    assert [(event.event, event.data) for event in events] == [("values", b"sneaky")]


async def test_closing_the_bus_stops_waiting_subscribers(
    make_bus: MakeBus, admin: Redis, prefix: str
) -> None:
    bus = make_bus()
    reader = asyncio.create_task(_drain(bus, "r1"))
    await _until(lambda: _subscribed_to(admin, prefix, "r1"))
    await bus.close()
    with pytest.raises(StoreUnavailable):
        await reader
    with pytest.raises(StoreUnavailable):
        await bus.publish("r1", "values", b"1")
    await bus.notify("chan")  # a no-op once closed
    await bus.close()  # idempotent
