"""runplane as several processes: two API servers and three workers on one PostgreSQL database
(state and queue) and one Redis (event fan-out), driven through the official SDK.

One cluster serves the whole module (starting five Python processes costs seconds of CPU); each
test works on its own threads, and a fixture restores every process between tests (restarting
killed ones, waking stopped ones). Which worker takes a run is up to the queue: the tests find the
executing process by the pid in the step log (or in the run's `lease_owner`) and act on that one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import ConflictError
from psycopg.rows import DictRow, dict_row

from runplane.events import BACKENDS as BUS_BACKENDS
from tests._services import drop_postgres_database, fresh_postgres_database, postgres_url, redis_url
from tests.e2e._procs import Cluster, Line, Proc, pid_of, read_steps

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

LEASE = 2.0
#: How long a draining worker lets its runs finish before handing them back.
GRACE = 2.0
#: Lease expiry, then the next recovery pass (lease / 2), then a claim: with room for a busy CI box.
RECOVERY_BOUND = LEASE + LEASE / 2 + 3.0

Conn = psycopg.AsyncConnection[DictRow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base_pg, base_redis = postgres_url(), redis_url()
    if base_pg is None or base_redis is None:
        pytest.skip("needs RUNPLANE_TEST_POSTGRES_URL and RUNPLANE_TEST_REDIS_URL")
    database = fresh_postgres_database(base_pg)
    env = {
        "RUNPLANE_LEASE_SECONDS": str(LEASE),
        "RUNPLANE_SHUTDOWN_GRACE": str(GRACE),
        "RUNPLANE_MAX_ATTEMPTS": "5",
    }
    cluster = Cluster(tmp_path_factory.mktemp("scaleout"), database, base_redis, env=env)
    cluster.add_api("api_a")
    cluster.add_api("api_b")
    for n in (1, 2, 3):
        cluster.add_worker(f"worker{n}", concurrency=4)
    try:
        with cluster.running():
            yield cluster
    finally:
        drop_postgres_database(database)


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every process of the shared cluster up before each test that uses it; their logs in the
    report when such a test fails."""
    if "cluster" not in request.fixturenames:
        yield
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    for proc in cluster.procs:
        if proc.alive():
            proc.send(signal.SIGCONT)
    cluster.start([p for p in cluster.procs if not p.alive()])
    try:
        yield
    finally:
        for proc in cluster.procs:
            if proc.alive():
                proc.send(signal.SIGCONT)
        print(cluster.logs())  # shown by pytest only when the test failed


@pytest.fixture
async def a(cluster: Cluster) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=cluster.apis[0].url, api_key=None)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def b(cluster: Cluster) -> AsyncIterator[LangGraphClient]:
    client = get_client(url=cluster.apis[1].url, api_key=None)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[Conn]:
    conn = await psycopg.AsyncConnection.connect(cluster.database_url, autocommit=True, row_factory=dict_row)
    try:
        yield conn
    finally:
        await conn.close()


# -- helpers --------------------------------------------------------------------------------------------


async def run_row(db: Conn, run_id: str) -> dict[str, Any]:
    cursor = await db.execute("SELECT * FROM runs WHERE run_id = %s", (run_id,))
    row = await cursor.fetchone()
    assert row is not None, f"run {run_id} not in the database"
    return dict(row)


async def poll(what: str, probe: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Call (and await) `probe()` until it returns something truthy: another process's doing, so
    there is no event to await."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def step_seen(
    log: Path, run_id: str, step: str, phase: str = "start", attempt: int | None = None
) -> Line:
    async def probe() -> Line | None:
        for line in read_steps(log, run_id):
            if line.step == step and line.phase == phase and attempt in (None, line.attempt):
                return line
        return None

    found: Line = await poll(f"{run_id} {step} {phase}", probe)
    return found


async def row_where(db: Conn, run_id: str, what: str, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        row = await run_row(db, run_id)
        return row if check(row) else None

    found: dict[str, Any] = await poll(what, probe, timeout=timeout)
    return found


def worker_of(cluster: Cluster, pid: int) -> Proc:
    proc = cluster.by_pid(pid)
    assert proc.kind == "worker", f"pid {pid} is {proc.name}, not a worker"
    return proc


STEPS_INPUT = {"delay": 0.3, "events": 3}


# -- streaming --------------------------------------------------------------------------------------------


async def test_events_of_a_run_created_on_one_api_stream_from_the_other(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(
        tid, "steps", input=STEPS_INPUT, stream_mode=["custom", "values"], stream_resumable=True
    )
    rid = run["run_id"]

    async def whole() -> list[Any]:
        return [part async for part in b.runs.join_stream(tid, rid, last_event_id="-1")]

    full_task = asyncio.create_task(whole())
    # Meanwhile, read a few events via A while the run is live, then resume on B from the last id.
    prefix = []
    async for part in a.runs.join_stream(tid, rid, last_event_id="-1"):
        prefix.append(part)
        if len(prefix) == 4:
            break
    assert (await a.runs.get(tid, rid))["status"] in ("pending", "running")
    rest = [part async for part in b.runs.join_stream(tid, rid, last_event_id=prefix[-1].id)]
    full = await full_task

    assert [p.id for p in prefix + rest] == [p.id for p in full]
    assert [(p.event, p.data) for p in prefix + rest] == [(p.event, p.data) for p in full]
    assert full[0].event == "metadata" and full[0].data == {"run_id": rid, "attempt": 1}
    custom = [p.data for p in full if p.event == "custom"]
    assert custom == [
        {"attempt": 1, "step": step, "i": i} for step in ("step1", "step2", "step3") for i in range(3)
    ]
    assert full[-1].event == "values"
    assert full[-1].data["log"] == ["step1@1", "step2@1", "step3@1"]
    assert (await b.runs.get(tid, rid))["status"] == "success"
    # Executed by a worker process, not by either API process.
    pids = {line.pid for line in read_steps(cluster.step_log, rid)}
    assert len(pids) == 1
    assert worker_of(cluster, pids.pop())


async def test_cancel_via_one_api_stops_the_run_on_its_worker(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient, db: Conn
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(tid, "ticker", input={"ticks": 200, "delay": 0.1})
    rid = run["run_id"]
    first = await step_seen(cluster.step_log, rid, "tick1")
    worker = worker_of(cluster, first.pid)

    started = time.monotonic()
    await b.runs.cancel(tid, rid, wait=True)
    latency = time.monotonic() - started
    cancelled_at = time.time()
    assert (await b.runs.get(tid, rid))["status"] == "interrupted"
    lines = read_steps(cluster.step_log, rid)
    # Reported interrupted only once it stopped: nothing ran after the cancel returned...
    assert max(line.t for line in lines) < cancelled_at
    assert {line.pid for line in lines} == {worker.pid}
    ticks_done = sum(1 for line in lines if line.phase == "done")
    assert ticks_done < 200
    # ...and nothing runs later either (there is no event for "nothing happens": give it time).
    await asyncio.sleep(0.6)
    assert read_steps(cluster.step_log, rid) == lines
    row = await run_row(db, rid)
    assert row["lease_owner"] is None and row["cancel_action"] == "interrupt"
    print(f"cross-process cancel: {latency * 1000:.0f} ms after {ticks_done} ticks on {worker.name}")


async def test_reject_admits_exactly_one_run_across_apis(a: LangGraphClient, b: LangGraphClient) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]

    async def create(client: LangGraphClient) -> str | None:
        try:
            run = await client.runs.create(
                tid, "ticker", input={"ticks": 100, "delay": 0.05}, multitask_strategy="reject"
            )
        except ConflictError:
            return None
        return str(run["run_id"])

    results = await asyncio.gather(*(create(a if i % 2 else b) for i in range(16)))
    admitted = [r for r in results if r is not None]
    assert len(admitted) == 1, results
    runs = await b.runs.list(tid)
    assert [r["run_id"] for r in runs] == admitted
    await a.runs.cancel(tid, admitted[0], wait=True)


async def test_enqueued_runs_created_on_both_apis_execute_in_creation_order(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run_ids = []
    for i in range(6):
        client = a if i % 2 == 0 else b
        run = await client.runs.create(
            tid, "steps", input={"delay": 0.05, "events": 1}, multitask_strategy="enqueue"
        )
        run_ids.append(run["run_id"])
    await b.runs.join(tid, run_ids[-1])
    assert [r["status"] for r in await a.runs.list(tid)] == ["success"] * 6

    lines = [line for line in read_steps(cluster.step_log) if line.thread_id == tid]
    started = list(dict.fromkeys(line.run_id for line in lines))
    assert started == run_ids
    spans = [
        (min(ln.t for ln in lines if ln.run_id == r), max(ln.t for ln in lines if ln.run_id == r))
        for r in run_ids
    ]
    # One at a time: each run starts after the previous one ended, whichever worker runs it.
    assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))
    print(f"6 enqueued runs ran on {len({ln.pid for ln in lines})} worker process(es)")


# -- failures -----------------------------------------------------------------------------------------------


async def test_run_of_a_killed_worker_resumes_on_another_from_its_checkpoint(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient, db: Conn
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(
        tid,
        "steps",
        # Attempt 1 blocks in step2; `sync` durability: step2 starts once step1's checkpoint is written.
        input={**STEPS_INPUT, "hold": {"step2": 1}, "hold_seconds": 60},
        stream_mode=["custom", "values"],
        stream_resumable=True,
        durability="sync",
    )
    rid = run["run_id"]
    blocked = await step_seen(cluster.step_log, rid, "step2")
    victim = worker_of(cluster, blocked.pid)

    victim.kill()
    killed_at = time.monotonic()
    resumed = await row_where(
        db, rid, "attempt 2 running", lambda r: r["attempt"] == 2, timeout=RECOVERY_BOUND + 10
    )
    recovery = time.monotonic() - killed_at
    assert pid_of(resumed["lease_owner"]) not in (None, victim.pid)
    cluster.restart(victim, wait=False)  # capacity back for the next tests (readied by `healthy`)

    parts = [p async for p in b.runs.join_stream(tid, rid, last_event_id="-1")]
    final = await b.runs.get(tid, rid)
    assert final["status"] == "success"
    assert recovery < RECOVERY_BOUND, f"recovered after {recovery:.2f}s"

    lines = read_steps(cluster.step_log, rid)
    events = [(ln.step, ln.phase, ln.attempt) for ln in lines]
    # Step 1 completed (and was checkpointed) before the crash: it is never run again.
    assert events == [
        ("step1", "start", 1),
        ("step1", "done", 1),
        ("step2", "start", 1),
        ("step2", "start", 2),
        ("step2", "done", 2),
        ("step3", "start", 2),
        ("step3", "done", 2),
    ]
    values: Any = (await b.threads.get(tid))["values"]
    assert values["log"] == ["step1@1", "step2@2", "step3@2"]
    # One stream across both attempts: attempt 2 announces itself, then re-runs step 2 only.
    attempts = [p.data["attempt"] for p in parts if p.event == "metadata"]
    assert attempts == [1, 2]
    print(f"killed worker's run running again after {recovery:.2f}s (lease {LEASE:g}s)")


async def test_worker_that_lost_its_lease_never_overwrites_the_new_owner(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient, db: Conn
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(
        tid,
        "steps",
        # Attempt 1 lingers in step3, so it is a moment from its end when it wakes up again.
        input={"delay": 0.05, "events": 1, "hold": {"step3": 1}, "hold_seconds": 0.4},
        durability="sync",
    )
    rid = run["run_id"]
    slow = await step_seen(cluster.step_log, rid, "step3")
    stale = worker_of(cluster, slow.pid)
    stale.send(signal.SIGSTOP)
    final = await row_where(
        db, rid, "attempt 2 done", lambda r: r["attempt"] == 2 and r["status"] == "success", timeout=20
    )
    winner = {ln.pid for ln in read_steps(cluster.step_log, rid) if ln.attempt == 2}
    assert stale.pid not in winner
    new_values: Any = (await b.threads.get(tid))["values"]
    assert new_values["log"] == ["step1@1", "step2@1", "step3@2"]

    stale.send(signal.SIGCONT)
    # Awake again, it finds out at its next write or heartbeat that attempt 2 took over.
    await poll("the stale worker to notice", lambda: f"run {rid}: lease lost" in stale.log_text())
    after = await run_row(db, rid)
    assert (after["status"], after["attempt"], after["ended_at"]) == ("success", 2, final["ended_at"])
    thread_after = await b.threads.get(tid)
    assert thread_after["values"] == new_values and thread_after["status"] == "idle"
    # The checkpointed state is the new attempt's too (a new run would continue from it).
    state: Any = await b.threads.get_state(tid)
    assert state["values"]["log"] == ["step1@1", "step2@1", "step3@2"] and state["next"] == []


async def test_draining_worker_hands_its_run_back(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient, db: Conn
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    run = await a.runs.create(
        tid,
        "steps",
        # Attempt 1 needs longer than the shutdown grace in step2: the worker must hand it back.
        input={**STEPS_INPUT, "hold": {"step2": 1}, "hold_seconds": 30},
        durability="sync",
    )
    rid = run["run_id"]
    busy = await step_seen(cluster.step_log, rid, "step2")
    draining = worker_of(cluster, busy.pid)
    draining.send(signal.SIGTERM)
    # It stops claiming at once: a run created now goes to another worker.
    other = await b.threads.create()
    probe = await b.runs.create(other["thread_id"], "steps", input={"delay": 0.05, "events": 1})
    await b.runs.join(other["thread_id"], probe["run_id"])
    assert draining.pid not in {ln.pid for ln in read_steps(cluster.step_log, probe["run_id"])}

    started = time.monotonic()
    assert await asyncio.to_thread(draining.popen.wait, 20) == 0  # type: ignore[union-attr]
    assert time.monotonic() - started < GRACE + 5
    final = await row_where(db, rid, "handed-back run to finish", lambda r: r["status"] == "success")
    assert final["attempt"] == 2
    lines = read_steps(cluster.step_log, rid)
    assert [(ln.step, ln.phase) for ln in lines if ln.attempt == 2] == [
        ("step2", "start"),
        ("step2", "done"),
        ("step3", "start"),
        ("step3", "done"),
    ]
    assert draining.pid not in {ln.pid for ln in lines if ln.attempt == 2}


async def test_draining_worker_finishes_a_run_that_ends_within_the_grace(
    cluster: Cluster, a: LangGraphClient, db: Conn
) -> None:
    thread = await a.threads.create()
    tid = thread["thread_id"]
    # About half a second of work left when the worker is told to stop: well within its grace.
    run = await a.runs.create(tid, "steps", input={"delay": 0.15, "events": 3})
    rid = run["run_id"]
    busy = await step_seen(cluster.step_log, rid, "step1")
    draining = worker_of(cluster, busy.pid)
    draining.send(signal.SIGTERM)
    assert await asyncio.to_thread(draining.popen.wait, 20) == 0  # type: ignore[union-attr]
    final = await run_row(db, rid)
    assert (final["status"], final["attempt"]) == ("success", 1)
    assert {ln.pid for ln in read_steps(cluster.step_log, rid)} == {draining.pid}


async def test_worker_blocked_past_its_lease_writes_nothing_when_its_step_ends(
    cluster: Cluster, a: LangGraphClient, b: LangGraphClient, db: Conn
) -> None:
    """As above, but the stale attempt's step does complete (its event loop was blocked, as by a
    long GC pause or a CPU-bound node): what it produces afterwards must be dropped."""
    thread = await a.threads.create()
    tid = thread["thread_id"]
    release = cluster.directory / f"release-{tid}"
    # Attempt 1 blocks its worker's event loop in step3 until the test lets it go.
    hold: dict[str, Any] = {
        "hold": {"step3": 1},
        "hold_seconds": 60,
        "hold_blocks": True,
        "release": str(release),
    }
    run = await a.runs.create(tid, "steps", input={"delay": 0.05, "events": 1, **hold}, durability="sync")
    rid = run["run_id"]
    blocked = await step_seen(cluster.step_log, rid, "step3")
    stale = worker_of(cluster, blocked.pid)
    final = await row_where(
        db, rid, "attempt 2 done", lambda r: r["attempt"] == 2 and r["status"] == "success", timeout=20
    )
    new_values: Any = (await b.threads.get(tid))["values"]
    release.touch()
    await step_seen(cluster.step_log, rid, "step3", "done", attempt=1)  # the stale step ended
    await poll("the stale worker to notice", lambda: f"run {rid}: lease lost" in stale.log_text())

    after = await run_row(db, rid)
    assert (after["status"], after["attempt"], after["ended_at"]) == ("success", 2, final["ended_at"])
    assert (await b.threads.get(tid))["values"] == new_values
    state: Any = await b.threads.get_state(tid)
    assert state["values"]["log"] == ["step1@1", "step2@1", "step3@2"] and state["next"] == []


# -- without Redis -------------------------------------------------------------------------------------------


def postgres_bus_available() -> bool:
    """True once `runplane.events.postgres` exists: then a PostgreSQL database without `--redis-url`
    doubles as the event bus (LISTEN/NOTIFY) in `runplane serve` and `runplane worker`."""
    return "postgresql" in BUS_BACKENDS and importlib.util.find_spec("runplane.events.postgres") is not None


@pytest.fixture
def pg_only(tmp_path: Path) -> Iterator[Cluster]:
    base_pg = postgres_url()
    if base_pg is None:
        pytest.skip("needs RUNPLANE_TEST_POSTGRES_URL")
    if not postgres_bus_available():
        pytest.skip("no PostgreSQL event bus (runplane.events.postgres) in this tree")
    database = fresh_postgres_database(base_pg)
    cluster = Cluster(tmp_path, database, None, env={"RUNPLANE_LEASE_SECONDS": str(LEASE)})
    cluster.add_api("api_a")
    cluster.add_api("api_b")
    cluster.add_worker("worker1", concurrency=4)
    try:
        with cluster.running():
            yield cluster
    finally:
        print(cluster.logs())
        drop_postgres_database(database)


async def test_without_redis_postgres_carries_streams_and_cancels_across_processes(pg_only: Cluster) -> None:
    a = get_client(url=pg_only.apis[0].url, api_key=None)
    b = get_client(url=pg_only.apis[1].url, api_key=None)
    try:
        thread = await a.threads.create()
        tid = thread["thread_id"]
        run = await a.runs.create(
            tid, "steps", input=STEPS_INPUT, stream_mode=["custom", "values"], stream_resumable=True
        )
        rid = run["run_id"]
        prefix = []
        async for part in b.runs.join_stream(tid, rid, last_event_id="-1"):
            prefix.append(part)
            if len(prefix) == 3:
                break
        rest = [p async for p in a.runs.join_stream(tid, rid, last_event_id=prefix[-1].id)]
        full = [p async for p in b.runs.join_stream(tid, rid, last_event_id="-1")]
        assert [(p.id, p.event, p.data) for p in prefix + rest] == [(p.id, p.event, p.data) for p in full]
        assert [p.data for p in full if p.event == "custom"] == [
            {"attempt": 1, "step": step, "i": i} for step in ("step1", "step2", "step3") for i in range(3)
        ]
        assert full[-1].data["log"] == ["step1@1", "step2@1", "step3@1"]

        ticking = await a.runs.create(tid, "ticker", input={"ticks": 200, "delay": 0.1})
        await step_seen(pg_only.step_log, ticking["run_id"], "tick1")
        await b.runs.cancel(tid, ticking["run_id"], wait=True)
        cancelled_at = time.time()
        assert (await a.runs.get(tid, ticking["run_id"]))["status"] == "interrupted"
        lines = read_steps(pg_only.step_log, ticking["run_id"])
        assert max(line.t for line in lines) < cancelled_at
        await asyncio.sleep(0.5)
        assert read_steps(pg_only.step_log, ticking["run_id"]) == lines
    finally:
        await a.aclose()
        await b.aclose()
