"""Infrastructure outages while runs execute, with real processes: PostgreSQL stopped with
`pg_ctl stop -m fast` for a few seconds, redis-server killed (SIGKILL) and restarted, and the disk
under a SQLite database filled up (a small tmpfs) and freed.

The cluster (one API, two workers) runs on a PostgreSQL and a Redis of this module's own
(`_outage.py`), so stopping them hurts no other test. Runs have one attempt (`max_attempts=1`)
and a 60 s lease: a run charged an attempt for the outage would end `error`, and a run stranded
until its lease expired could not settle within `SETTLE_BOUND`. So every run ending `success`
within the bound, at attempt 1, proves the outage was ridden out. The `ticker` graph checkpoints
every tick (`durability="sync"`), so "tick n+1 started" proves tick n was complete: no later start
of tick n is allowed (a tick interrupted by the outage before its checkpoint may run again).

Each test prints its figures (runs failed, attempts, seconds from the dependency's return to every
run settled, and, for PostgreSQL, the latency of requests during the outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests._services import drop_postgres_database, fresh_postgres_database
from tests.e2e._outage import OwnPostgres, OwnRedis, fill, small_tmpfs
from tests.e2e._procs import APP_CONFIG, LOG_ENV, RUNPLANE, Cluster, Proc, free_port, read_steps

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LEASE = 60.0
#: A run stranded until its lease expired (60 s) cannot settle within this.
SETTLE_BOUND = 40.0
RUNS = 8
TICKS = 16
TICK_SECONDS = 0.25
OUTAGE_SECONDS = 4.0
#: Longer than the API's stream poll (5 s), so the stream client's next read meets the outage.
REDIS_OUTAGE_SECONDS = 6.0


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    try:
        pg, redis = OwnPostgres(), OwnRedis()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"cannot start our own PostgreSQL and Redis: {exc}")
    try:
        pg.start()
        redis.start()
        yield pg, redis
    finally:
        redis.close()
        pg.close()


@pytest.fixture
def cluster(services: tuple[OwnPostgres, OwnRedis], tmp_path: Path) -> Iterator[Cluster]:
    pg, redis = services
    if not pg.running():
        pg.start()
    if redis.popen is None or redis.popen.poll() is not None:
        redis.start()
    database = fresh_postgres_database(pg.url)
    env = {"RUNPLANE_LEASE_SECONDS": str(LEASE), "RUNPLANE_MAX_ATTEMPTS": "1", "RUNPLANE_SHUTDOWN_GRACE": "1"}
    cluster = Cluster(tmp_path, database, redis.url, env=env)
    cluster.add_api("api")
    cluster.add_worker("worker1", concurrency=RUNS)
    cluster.add_worker("worker2", concurrency=RUNS)
    try:
        with cluster.running():
            yield cluster
    finally:
        print(cluster.logs())  # shown by pytest only when the test failed
        if not pg.running():
            pg.start()
        drop_postgres_database(database)


@dataclass
class Figures:
    dependency: str
    failed: int = 0
    attempts: list[int] = field(default_factory=list)
    settle_seconds: float = 0.0
    #: Seconds from the dependency's return until every run had made progress again.
    resume_seconds: float = 0.0
    request_latencies: list[float] = field(default_factory=list)

    def show(self) -> str:
        latency = ""
        if self.request_latencies:
            latency = f" request latency during the outage: max {max(self.request_latencies):.3f}s"
        return (
            f"OUTAGE FIGURES {self.dependency}: runs failed {self.failed}/{RUNS}, attempts used "
            f"{sorted(self.attempts)}, every run progressing again {self.resume_seconds:.2f}s and settled "
            f"{self.settle_seconds:.2f}s after its return;{latency}"
        )


async def start_runs(client: LangGraphClient) -> list[tuple[str, str]]:
    runs = []
    for _ in range(RUNS):
        thread = await client.threads.create()
        run = await client.runs.create(
            thread["thread_id"],
            "ticker",
            input={"ticks": TICKS, "delay": TICK_SECONDS},
            stream_mode=["custom"],
            durability="sync",
        )
        runs.append((thread["thread_id"], run["run_id"]))
    return runs


async def eventually(condition: Callable[[], bool], timeout: float) -> None:
    """Poll another process's side effect without blocking the event loop."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - another process's doing: no event to await
            await asyncio.sleep(0.02)


async def wait_ticking(cluster: Cluster, runs: list[tuple[str, str]]) -> None:
    """Until every run has completed a couple of ticks: the outage hits them mid-way."""

    def ticking() -> bool:
        return all(
            any(
                line.step == "tick1" and line.phase == "done" for line in read_steps(cluster.step_log, run_id)
            )
            for _, run_id in runs
        )

    await eventually(ticking, 60)


async def settle(client: LangGraphClient, runs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every run once terminal (polled: the API may itself be riding out the outage)."""
    finished: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(SETTLE_BOUND):
        while len(finished) < len(runs):
            for thread_id, run_id in runs:
                if run_id in finished:
                    continue
                with contextlib.suppress(httpx.HTTPError):
                    run = await client.runs.get(thread_id, run_id)
                    if run["status"] not in ("pending", "running"):
                        finished[run_id] = dict(run)
            await asyncio.sleep(0.05)
    return [finished[run_id] for _, run_id in runs]


def resumed_after(cluster: Cluster, runs: list[tuple[str, str]], back_wall: float) -> float:
    """Seconds from `back_wall` (wall clock) until the last run logged a step after it."""
    firsts = []
    for _, run_id in runs:
        after = [line.t for line in read_steps(cluster.step_log, run_id) if line.t >= back_wall]
        firsts.append(min(after) - back_wall if after else float("nan"))
    return max(firsts)


def attempts_of(database_url: str, runs: list[tuple[str, str]]) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT attempt FROM runs WHERE run_id = ANY(%s)", ([r for _, r in runs],)
        ).fetchall()
    return [row[0] for row in rows]


def rerun_completed_steps(cluster: Cluster, run_id: str) -> list[str]:
    """Ticks started again after the next tick had started (so after their checkpoint landed)."""
    starts: dict[int, list[float]] = {}
    for line in read_steps(cluster.step_log, run_id):
        if line.phase == "start" and line.step.startswith("tick"):
            starts.setdefault(int(line.step[4:]), []).append(line.t)
    return [
        f"tick{n}"
        for n, times in starts.items()
        if n + 1 in starts and any(t > min(starts[n + 1]) for t in times)
    ]


async def check(cluster: Cluster, client: LangGraphClient, runs: list[tuple[str, str]]) -> None:
    for (thread_id, run_id), run in zip(runs, await settle(client, runs), strict=True):
        assert run["status"] == "success", (run_id, run)
        state: Any = await client.threads.get_state(thread_id)
        assert state["values"]["done"] == list(range(TICKS)), state["values"]
        assert rerun_completed_steps(cluster, run_id) == []
        assert {line.attempt for line in read_steps(cluster.step_log, run_id)} == {1}


async def test_postgres_stopped_while_runs_execute(
    cluster: Cluster, services: tuple[OwnPostgres, OwnRedis]
) -> None:
    pg, _ = services
    api = cluster.apis[0]
    client = get_client(url=api.url, api_key=None)
    runs = await start_runs(client)
    await wait_ticking(cluster, runs)
    figures = Figures("postgresql")

    await asyncio.to_thread(pg.stop)
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        assert (await http.get("/ok")).status_code == 200  # liveness: the process is fine
        ready = await http.get("/ok", params={"check_db": 1})
        assert ready.status_code == 500 and ready.json()["services"]["database"] == "unhealthy"
        while time.monotonic() < outage_ends:
            started = time.monotonic()
            response = await http.get(f"/threads/{runs[0][0]}")
            figures.request_latencies.append(time.monotonic() - started)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert "127.0.0.1" not in response.text and "postgres" not in response.text.lower()
            assert response.json()["request_id"] == response.headers["x-request-id"]
            await asyncio.sleep(0.2)
    await asyncio.to_thread(pg.start)
    back, back_wall = time.monotonic(), time.time()

    finished = await settle(client, runs)
    figures.settle_seconds = time.monotonic() - back
    figures.failed = sum(run["status"] != "success" for run in finished)
    figures.attempts = attempts_of(cluster.database_url, runs)
    figures.resume_seconds = resumed_after(cluster, runs, back_wall)
    print(figures.show())
    # Bounded, not timed: a request that waited for the pool timeout (30 s) would exceed it.
    assert max(figures.request_latencies) < 10
    assert figures.attempts == [1] * RUNS
    await check(cluster, client, runs)
    async with httpx.AsyncClient(base_url=api.url) as http:
        ready = await http.get("/ok", params={"check_db": 1})
        assert ready.json() == {"ok": True, "services": {"database": "healthy", "redis": "healthy"}}


async def test_redis_killed_while_runs_execute_and_streams_follow(
    cluster: Cluster, services: tuple[OwnPostgres, OwnRedis]
) -> None:
    _, redis = services
    client = get_client(url=cluster.apis[0].url, api_key=None)
    runs = await start_runs(client)
    await wait_ticking(cluster, runs)
    figures = Figures("redis")
    redis_back = asyncio.Event()
    thread_id, run_id = runs[0]
    seen: list[int] = []
    errors: list[Any] = []

    async def follow() -> None:
        """A stream client: cut off by the outage, it resumes with its Last-Event-ID."""
        last_id = "-1"
        while True:
            ended = True
            try:
                async for part in client.runs.join_stream(thread_id, run_id, last_event_id=last_id):
                    if part.event == "error":
                        errors.append(part.data)
                        ended = False
                        break
                    if part.event == "custom":
                        seen.append(part.data["tick"])
                    last_id = part.id or last_id
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
                ended = False
            if ended:
                return
            await redis_back.wait()

    follower = asyncio.create_task(follow())
    await eventually(lambda: bool(seen), 30)
    redis.kill()
    await asyncio.sleep(REDIS_OUTAGE_SECONDS)
    await asyncio.to_thread(redis.start)
    back, back_wall = time.monotonic(), time.time()
    redis_back.set()

    finished = await settle(client, runs)
    figures.settle_seconds = time.monotonic() - back
    figures.failed = sum(run["status"] != "success" for run in finished)
    figures.attempts = attempts_of(cluster.database_url, runs)
    figures.resume_seconds = resumed_after(cluster, runs, back_wall)
    print(figures.show())
    assert figures.attempts == [1] * RUNS
    await check(cluster, client, runs)
    async with asyncio.timeout(SETTLE_BOUND):
        await follower
    # Cut off with an error event, resumed, and saw every tick once, in order.
    assert errors, "the stream client was never cut off"
    assert seen == list(range(TICKS))


# -- SQLite: the disk fills up --------------------------------------------------------------------------


async def test_sqlite_disk_full_while_runs_execute(tmp_path: Path) -> None:
    """`runplane serve` (API and workers) on a SQLite file in a small tmpfs, filled up mid-run: runs
    pause (every write fails with SQLITE_FULL) and resume at attempt 1 once space is freed."""
    try:
        tmpfs = small_tmpfs("16m")
        disk = tmpfs.__enter__()
    except PermissionError as exc:
        pytest.skip(f"no tmpfs here: {exc}")
    proc: Proc | None = None
    try:
        port = free_port()
        step_log = tmp_path / "steps.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")},
            "PYTHONUNBUFFERED": "1",
            LOG_ENV: str(step_log),
            "RUNPLANE_LEASE_SECONDS": str(LEASE),
            "RUNPLANE_MAX_ATTEMPTS": "1",
        }
        argv = [*RUNPLANE, "serve", "--database-url", f"sqlite:///{disk / 'runplane.db'}"]
        argv += ["--config", str(APP_CONFIG), "--port", str(port), "--workers", str(RUNS)]
        proc = Proc("serve", "api", argv, env, tmp_path, port=port)
        proc.start()
        proc.wait_ready()
        cluster = Cluster(tmp_path, "unused", None)  # for its step-log helpers only
        cluster.step_log = step_log
        client = get_client(url=proc.url, api_key=None)
        runs = await start_runs(client)
        await wait_ticking(cluster, runs)

        filler = fill(disk)
        try:
            # Until the server has met the full disk (its log says so), then a little longer.
            await eventually(lambda: "database or disk is full" in proc.log_text() if proc else False, 30)
            await asyncio.sleep(1.0)
        finally:
            filler.unlink()
        back, back_wall = time.monotonic(), time.time()
        figures = Figures("sqlite-disk-full")
        finished = await settle(client, runs)
        figures.settle_seconds = time.monotonic() - back
        figures.failed = sum(run["status"] != "success" for run in finished)
        figures.resume_seconds = resumed_after(cluster, runs, back_wall)
        with contextlib.closing(sqlite3.connect(disk / "runplane.db")) as conn:  # closed: umount needs it
            query = f"SELECT attempt FROM runs WHERE run_id IN ({','.join('?' * len(runs))})"
            figures.attempts = [row[0] for row in conn.execute(query, [run_id for _, run_id in runs])]
        print(figures.show())
        assert figures.attempts == [1] * RUNS
        await check(cluster, client, runs)
    finally:
        if proc is not None:
            print(proc.log_text()[-6000:])
            proc.send(signal.SIGTERM)
            try:
                proc.popen.wait(timeout=15) if proc.popen else None
            except subprocess.TimeoutExpired:
                proc.kill()
        tmpfs.__exit__(None, None, None)
