"""Chaos: many runs while workers are killed with SIGKILL every ~2 s (and restarted), and one API
process is killed and restarted mid-way. Afterwards nothing is lost, nothing ran twice, no thread
ran two runs at once, and every resumable stream client saw every event exactly once.

What "ran twice" means: a run killed mid-way resumes from its last checkpoint, so a step may run
again only if its checkpoint was not written. With `durability="sync"` a step's checkpoint is
written before the next step starts, so "step N+1 started in attempt k" proves step N was complete
in attempt k: no later attempt may start step N again. (A step killed after logging `done` but
before its checkpoint landed legitimately runs again: at-least-once, counted and printed.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from psycopg.rows import DictRow, dict_row

from tests._services import drop_postgres_database, fresh_postgres_database, postgres_url, redis_url
from tests.e2e._procs import Cluster, Line, Proc, pid_of, read_steps

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

LEASE = 2.0
RUNS = 60
THREADS = 15
#: Runs are created over this many seconds, so the kills hit runs at every stage.
CREATE_OVER = 30.0
KILL_EVERY = 2.0
#: Slots per worker: more than the threads need, so a recovered run does not queue for a slot.
CONCURRENCY = 6
#: Hard bound on the chaos phase (it ends earlier, once every run is terminal).
CHAOS_LIMIT = 90.0
STEPS = ("step1", "step2", "step3")
EVENTS_PER_STEP = 4
RUN_INPUT = {"delay": 0.4, "events": EVENTS_PER_STEP}

Conn = psycopg.AsyncConnection[DictRow]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base_pg, base_redis = postgres_url(), redis_url()
    if base_pg is None or base_redis is None:
        pytest.skip("needs RUNPLANE_TEST_POSTGRES_URL and RUNPLANE_TEST_REDIS_URL")
    database = fresh_postgres_database(base_pg)
    env = {
        "RUNPLANE_LEASE_SECONDS": str(LEASE),
        "RUNPLANE_MAX_ATTEMPTS": "10",
        "RUNPLANE_SHUTDOWN_GRACE": "1",
    }
    cluster = Cluster(tmp_path_factory.mktemp("chaos"), database, base_redis, env=env)
    cluster.add_api("api_a")
    cluster.add_api("api_b")
    for n in (1, 2, 3):
        cluster.add_worker(f"worker{n}", concurrency=CONCURRENCY)
    try:
        with cluster.running():
            yield cluster
    finally:
        print(cluster.logs())  # shown by pytest only when the test failed
        drop_postgres_database(database)


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[Conn]:
    conn = await psycopg.AsyncConnection.connect(cluster.database_url, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


# -- what the test watches -------------------------------------------------------------------------------


@dataclass
class Monitor:
    """Samples the runs table: when each (run, attempt) was first seen running, and the invariant
    that a thread never has two running runs."""

    db: Conn
    first_running: dict[tuple[str, int], float] = field(default_factory=dict)
    samples: int = 0
    violations: list[Any] = field(default_factory=list)

    async def sample(self) -> None:
        cursor = await self.db.execute("SELECT run_id, thread_id, attempt FROM runs WHERE status = 'running'")
        now = time.monotonic()
        per_thread: dict[str, int] = defaultdict(int)
        for row in await cursor.fetchall():
            self.first_running.setdefault((row["run_id"], row["attempt"]), now)
            per_thread[row["thread_id"]] += 1
        self.violations += [t for t, n in per_thread.items() if n > 1]
        self.samples += 1

    async def watch(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)


@dataclass
class Kill:
    at: float
    #: `at` on the wall clock, to compare with the database's `started_at`.
    wall: float
    victim: str
    #: (run_id, attempt) the killed worker was executing.
    held: list[tuple[str, int]]


@dataclass
class StreamClient:
    """Joins a run's stream and follows it to the end, reconnecting with Last-Event-ID (on the other
    API) whenever its connection fails for good; the SDK itself reconnects on short drops."""

    thread_id: str
    run_id: str
    parts: list[Any] = field(default_factory=list)
    reconnects: int = 0

    async def follow(self, clients: list[LangGraphClient], first: int) -> None:
        last_id = "-1"  # "everything": also makes the SDK resume with an id after an early drop
        for turn in itertools.count(first):
            client = clients[turn % len(clients)]
            try:
                async for part in client.runs.join_stream(self.thread_id, self.run_id, last_event_id=last_id):
                    self.parts.append(part)
                    last_id = part.id or last_id
                return
            except httpx.HTTPError:
                self.reconnects += 1
                await asyncio.sleep(0.5)


# -- the test ----------------------------------------------------------------------------------------------


@dataclass
class Chaos:
    """What happened, for the checks and the printed figures."""

    seed: int
    kills: list[Kill] = field(default_factory=list)
    #: Kill ticks skipped because fewer than two workers were up.
    skipped: int = 0
    #: Seconds from a worker's restart to its readiness.
    restarts: list[float] = field(default_factory=list)
    seconds: float = 0.0
    #: Stream requests that resumed after a dropped connection (a Last-Event-ID other than "-1").
    resumes: int = 0

    async def count_resume(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/stream") and request.headers.get("last-event-id") not in (None, "-1"):
            self.resumes += 1


async def watch_restarts(cluster: Cluster, chaos: Chaos, stop: asyncio.Event) -> None:
    """Time how long each restarted worker takes to be ready again (100 ms resolution)."""
    timed: set[int] = set()
    while not stop.is_set():
        for proc in cluster.workers:
            if len(proc.pids) > 1 and proc.pid not in timed and proc.alive() and proc.ready():
                timed.add(proc.pid)
                chaos.restarts.append(time.monotonic() - proc.started_at)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def test_runs_survive_workers_killed_every_two_seconds(cluster: Cluster, db: Conn) -> None:
    chaos = Chaos(seed=random.randrange(2**32))
    rng = random.Random(chaos.seed)
    api_a, api_b = cluster.apis
    clients = [get_client(url=api.url, api_key=None) for api in (api_a, api_b)]
    for client in clients:
        client.http.client.event_hooks["request"].append(chaos.count_resume)
    stop = asyncio.Event()
    monitor = Monitor(db)
    watchers = [
        asyncio.create_task(monitor.watch(stop)),
        asyncio.create_task(watch_restarts(cluster, chaos, stop)),
    ]
    streams: list[StreamClient] = []
    followers: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        threads = [(await clients[i % 2].threads.create())["thread_id"] for i in range(THREADS)]

        async def create_runs() -> None:
            for i in range(RUNS):
                if i == RUNS // 2:
                    # Mid-way, between two creates (none is in flight on it): every stream client of
                    # API A loses its connection and resumes with Last-Event-ID; requests to A wait
                    # for it in the SDK's connect retries.
                    cluster.restart(api_a, wait=False)
                thread_id = threads[i % THREADS]
                run = await create_run(clients, i, thread_id)
                stream = StreamClient(thread_id, run["run_id"])
                streams.append(stream)
                followers.append(asyncio.create_task(stream.follow(clients, first=i + 1)))
                await asyncio.sleep(CREATE_OVER / RUNS)

        creating = asyncio.create_task(create_runs())

        async def all_done() -> bool:
            cursor = await db.execute("SELECT count(*) AS n FROM runs WHERE status IN ('pending', 'running')")
            row = await cursor.fetchone()
            return creating.done() and row is not None and row["n"] == 0

        while not await all_done():
            assert time.monotonic() - started < CHAOS_LIMIT, "runs still active at the end of the chaos"
            await asyncio.sleep(KILL_EVERY * rng.uniform(0.75, 1.25))
            if creating.done():
                creating.result()
            # Only a worker that works (a starting one holds nothing), and never the last one: the
            # kills are to interrupt runs, not to stop all progress while restarts are slow.
            ready = [w for w in cluster.workers if w.ready()]
            if len(ready) < 2:
                chaos.skipped += 1
                continue
            chaos.kills.append(await kill_worker(cluster, db, rng.choice(ready)))
        chaos.seconds = time.monotonic() - started
        await creating
        await asyncio.wait_for(asyncio.gather(*followers), timeout=60)
    finally:
        stop.set()
        await asyncio.gather(*watchers)
        for task in followers:
            task.cancel()
        for client in clients:
            await client.aclose()

    # Back to full strength before reading results through the APIs.
    cluster.start([p for p in cluster.procs if not p.alive()])
    reader = get_client(url=api_b.url, api_key=None)
    try:
        await check_outcome(cluster, db, reader, monitor, chaos, streams)
    finally:
        await reader.aclose()


async def create_run(clients: list[LangGraphClient], i: int, thread_id: str) -> Any:
    """Create a run through API `i % 2`, or through the other one while that one cannot be reached
    (a refused connection sent nothing, so retrying cannot create the run twice)."""
    for turn in range(i, i + 10):
        try:
            return await clients[turn % 2].runs.create(
                thread_id,
                "steps",
                input=RUN_INPUT,
                stream_mode=["custom", "values"],
                stream_resumable=True,
                multitask_strategy="enqueue",
                durability="sync",
            )
        except httpx.ConnectError:
            continue
    raise AssertionError("neither API process accepts connections")


async def kill_worker(cluster: Cluster, db: Conn, victim: Proc) -> Kill:
    """SIGKILL `victim`, note the runs it held, and start it again (capacity stays)."""
    pid = victim.pid
    victim.kill()
    at, wall = time.monotonic(), time.time()
    cursor = await db.execute(
        "SELECT run_id, attempt, lease_owner FROM runs WHERE status = 'running' AND lease_owner LIKE %s",
        (f"%:{pid}:%",),
    )
    held = [
        (row["run_id"], row["attempt"])
        for row in await cursor.fetchall()
        if pid_of(row["lease_owner"]) == pid
    ]
    cluster.restart(victim, wait=False)
    return Kill(at, wall, victim.name, held)


async def check_outcome(
    cluster: Cluster,
    db: Conn,
    reader: LangGraphClient,
    monitor: Monitor,
    chaos: Chaos,
    streams: list[StreamClient],
) -> None:
    cursor = await db.execute("SELECT * FROM runs ORDER BY seq")
    rows = {row["run_id"]: dict(row) for row in await cursor.fetchall()}

    # None lost: every run ended, and ended well.
    assert len(rows) == RUNS
    assert {row["status"] for row in rows.values()} == {"success"}, chaos.seed

    # Never two runs of a thread at once: the sampled invariant, the recorded intervals, and the log.
    assert monitor.violations == []
    log = read_steps(cluster.step_log)
    by_thread: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows.values():
        by_thread[row["thread_id"]].append(row)
    for runs in by_thread.values():
        runs.sort(key=lambda r: r["seq"])
        for earlier, later in itertools.pairwise(runs):
            assert earlier["ended_at"] <= later["started_at"]
            assert span(log, earlier["run_id"])[1] <= span(log, later["run_id"])[0]

    # Recovered runs continued from their checkpoint: no completed step ran again.
    uncommitted_reruns = 0
    for run_id, row in rows.items():
        lines = [ln for ln in log if ln.run_id == run_id]
        uncommitted_reruns += check_steps(run_id, lines, row["attempt"])
    for thread_id, runs in by_thread.items():
        values: Any = (await reader.threads.get(thread_id))["values"]
        # Each run applied each step exactly once, in order (the thread's state accumulates them).
        assert [entry.split("@")[0] for entry in values["log"]] == list(STEPS) * len(runs)

    # Every stream client got every event of its run, once, in order.
    for stream in streams:
        full = [p async for p in reader.runs.join_stream(stream.thread_id, stream.run_id, last_event_id="-1")]
        check_stream(stream, full, rows[stream.run_id]["attempt"])

    # Every run a killed worker held ran again elsewhere.
    recoveries = []
    for kill in chaos.kills:
        for run_id, attempt in kill.held:
            # The attempt number only grows when a worker claims the run: the durable proof.
            final = rows[run_id]
            assert final["attempt"] > attempt, (
                f"run {run_id} (attempt {attempt}) never ran again after {kill.victim}"
            )
            again = [
                t - kill.at for (r, a), t in monitor.first_running.items() if r == run_id and a > attempt
            ]
            if not again and final["attempt"] == attempt + 1:
                # The next attempt was over between two samples (little was left to run).
                again = [final["started_at"].timestamp() - kill.wall]
            if again:
                recoveries.append(min(again))
    assert recoveries, "no kill hit a running run: the chaos proved nothing"
    # The API kill cut live streams (at least that of the run created just before), which resumed.
    assert chaos.resumes >= 1

    retried = [row for row in rows.values() if row["attempt"] > 1]
    print(
        f"\nchaos (seed {chaos.seed}): {RUNS} runs on {THREADS} threads in {chaos.seconds:.1f}s; "
        f"{len(chaos.kills)} worker kills (SIGKILL; {chaos.skipped} ticks skipped, fewer than 2 workers up) "
        f"+ 1 API kill; worker restart to ready p50 {median(chaos.restarts):.2f}s "
        f"max {top(chaos.restarts):.2f}s"
        f"\n  {sum(len(k.held) for k in chaos.kills)} running runs interrupted by kills; {len(retried)} runs "
        f"took more than one attempt ({sum(r['attempt'] - 1 for r in retried)} recoveries, max attempt "
        f"{max(r['attempt'] for r in rows.values())})"
        f"\n  time to recover (kill -> running again elsewhere) p50 {median(recoveries):.2f}s "
        f"p90 {pct(recoveries, 90):.2f}s max {top(recoveries):.2f}s (lease {LEASE:g}s)"
        f"\n  {uncommitted_reruns} step(s) ran again because the kill came before their checkpoint; "
        f"{chaos.resumes} stream reconnects with Last-Event-ID ({sum(s.reconnects for s in streams)} "
        "of them by the test after the SDK gave up); "
        f"{monitor.samples} DB samples"
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def top(values: list[float]) -> float:
    return max(values) if values else float("nan")


def pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return top(values)
    return statistics.quantiles(values, n=100)[p - 1]


def span(log: list[Line], run_id: str) -> tuple[float, float]:
    times = [ln.t for ln in log if ln.run_id == run_id]
    assert times, f"run {run_id} never ran a step"
    return min(times), max(times)


def check_steps(run_id: str, lines: list[Line], final_attempt: int) -> int:
    """Assert that no step completed (checkpointed) in one attempt started again in a later one;
    return how many steps ran again because their checkpoint had not been written."""
    committed: dict[str, int] = {}  # step -> first attempt that checkpointed it
    for ln in lines:
        if ln.phase == "start":
            index = STEPS.index(ln.step)
            if index > 0:
                committed.setdefault(STEPS[index - 1], ln.attempt)
    committed.setdefault(STEPS[-1], final_attempt)  # the run succeeded in its last attempt
    for ln in lines:
        if ln.phase == "start":
            first = committed.get(ln.step)
            assert first is None or ln.attempt <= first, (
                f"run {run_id}: {ln.step} was complete in attempt {first} yet started in attempt {ln.attempt}"
            )
    done: dict[str, int] = defaultdict(int)
    for ln in lines:
        if ln.phase == "done":
            done[ln.step] += 1
    assert set(done) == set(STEPS), f"run {run_id}: steps done {dict(done)}"
    return sum(n - 1 for n in done.values())


def check_stream(stream: StreamClient, full: list[Any], final_attempt: int) -> None:
    """The client saw exactly the run's stream (no gap, no duplicate, in order), and within each
    attempt the custom events count up without a hole."""
    got = [(p.id, p.event, p.data) for p in stream.parts]
    assert got == [(p.id, p.event, p.data) for p in full], f"run {stream.run_id}: stream differs"
    ids = [p.id for p in full]
    assert len(set(ids)) == len(ids)
    attempts = [p.data["attempt"] for p in full if p.event == "metadata"]
    assert attempts == sorted(set(attempts)) and attempts[-1] == final_attempt
    seen: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for p in full:
        if p.event == "custom":
            seen[p.data["attempt"]].append((p.data["step"], p.data["i"]))
    for attempt, events in seen.items():
        # An attempt starts at some step and emits its counters in order; it may stop anywhere.
        first = STEPS.index(events[0][0])
        expected = [(s, i) for s in STEPS[first:] for i in range(EVENTS_PER_STEP)]
        assert events == expected[: len(events)], f"run {stream.run_id} attempt {attempt}: {events}"
        if attempt == final_attempt:
            assert events == expected
    assert full[-1].event == "values" and len(full[-1].data["log"]) % len(STEPS) == 0
