"""Outage figures: what PostgreSQL and Redis outages cost running runs, and what idle memory costs.

Not a test. Usage, from the repository root (root or a user that can run initdb; no services
needed: it starts a PostgreSQL and a Redis of its own):

    python benchmarks/outage_bench.py                     # both outages, 16 runs, 10 s each
    python benchmarks/outage_bench.py --runs 16 --outage 10 --only postgres
    python benchmarks/outage_bench.py --memory            # RSS after 40 runs with 4 MiB inputs

To measure another checkout (e.g. before a change), put its `src` first on PYTHONPATH:
`PYTHONPATH=/path/to/other/src python benchmarks/outage_bench.py`; the processes inherit it.

1. PostgreSQL stopped (`pg_ctl stop -m fast`) for `--outage` seconds while `--runs` ticker runs
   execute on two worker processes (default lease 30 s, 3 attempts); then started again. Figures:
   runs failed, attempts used, seconds from PostgreSQL's return until every run made progress again
   and until every run settled, and the latency and status of API requests during the outage
   (`GET /threads/<id>`, `/ok`, `/ok?check_db=1`).
2. redis-server killed (SIGKILL) for `--outage` seconds, then started again (empty): the same figures.
3. `--memory`: one `runplane serve` on SQLite with the in-process bus; 40 runs of the `echo` graph with
   4 MiB inputs, streamed to the end; its RSS right after, and after 60 s idle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from langgraph_sdk import get_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._services import drop_postgres_database, fresh_postgres_database
from tests.e2e._outage import OwnPostgres, OwnRedis
from tests.e2e._procs import RUNPLANE, Cluster, free_port, read_steps, wait_until

TICKS = 16
TICK_SECONDS = 0.25


async def _runs(client: Any, n: int) -> list[tuple[str, str]]:
    runs = []
    for _ in range(n):
        thread = await client.threads.create()
        run = await client.runs.create(
            thread["thread_id"], "ticker", input={"ticks": TICKS, "delay": TICK_SECONDS}, durability="sync"
        )
        runs.append((thread["thread_id"], run["run_id"]))
    return runs


async def _settled(client: Any, runs: list[tuple[str, str]], limit: float) -> dict[str, str]:
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + limit
    while len(statuses) < len(runs) and time.monotonic() < deadline:
        for thread_id, run_id in runs:
            if run_id not in statuses:
                with contextlib.suppress(httpx.HTTPError):
                    run = await client.runs.get(thread_id, run_id)
                    if run["status"] not in ("pending", "running"):
                        statuses[run_id] = run["status"]
        await asyncio.sleep(0.05)
    return statuses


async def outage(which: str, n_runs: int, seconds: float) -> None:
    pg, redis = OwnPostgres(), OwnRedis()
    pg.start()
    redis.start()
    database = fresh_postgres_database(pg.url)
    directory = Path(tempfile.mkdtemp(prefix=f"runplane-outage-{which}."))
    cluster = Cluster(directory, database, redis.url, env={})
    cluster.add_api("api")
    cluster.add_worker("worker1", concurrency=n_runs)
    cluster.add_worker("worker2", concurrency=n_runs)
    try:
        with cluster.running():
            api = cluster.apis[0]
            client = get_client(url=api.url, api_key=None)
            runs = await _runs(client, n_runs)
            wait_until(
                lambda: all(
                    any(s.step == "tick1" and s.phase == "done" for s in read_steps(cluster.step_log, r))
                    for _, r in runs
                ),
                60,
                "runs to tick",
            )
            probes = {
                "GET /threads/<id>": f"/threads/{runs[0][0]}",
                "/ok": "/ok",
                "/ok?check_db=1": "/ok?check_db=1",
            }
            seen: dict[str, list[tuple[int, float]]] = {name: [] for name in probes}
            if which == "postgres":
                await asyncio.to_thread(pg.stop)
            else:
                redis.kill()
            ends = time.monotonic() + seconds
            async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
                while time.monotonic() < ends:
                    for name, path in probes.items():
                        started = time.monotonic()
                        try:
                            status = (await http.get(path)).status_code
                        except httpx.HTTPError:
                            status = 0
                        seen[name].append((status, time.monotonic() - started))
                    await asyncio.sleep(0.2)
            if which == "postgres":
                await asyncio.to_thread(pg.start)
            else:
                await asyncio.to_thread(redis.start)
            back, back_wall = time.monotonic(), time.time()
            final = await _settled(client, runs, 150)
            settle = time.monotonic() - back
            progress = []
            for _, run_id in runs:
                after = [s.t for s in read_steps(cluster.step_log, run_id) if s.t >= back_wall]
                progress.append(min(after) - back_wall if after else float("nan"))
            with psycopg.connect(database) as conn:
                attempts = [
                    row[0]
                    for row in conn.execute(
                        "SELECT attempt FROM runs WHERE run_id = ANY(%s)", ([r for _, r in runs],)
                    ).fetchall()
                ]
                errors = [
                    row[0]
                    for row in conn.execute(
                        "SELECT DISTINCT error FROM runs WHERE status = 'error' AND run_id = ANY(%s)",
                        ([r for _, r in runs],),
                    ).fetchall()
                ]
            failed = sum(status != "success" for status in final.values()) + (len(runs) - len(final))
            print(f"== {which} stopped for {seconds:g} s, {n_runs} runs executing")
            print(f"   runs failed: {failed}/{n_runs}  {errors[:2]}")
            print(f"   attempts used: {sorted(attempts)}")
            print(
                f"   from its return: every run progressing again after {max(progress):.2f} s, "
                f"every run settled after {settle:.2f} s (unsettled: {len(runs) - len(final)})"
            )
            for name, samples in seen.items():
                latencies = [latency for _, latency in samples]
                print(
                    f"   API during the outage: {name} -> {sorted({status for status, _ in samples})}, "
                    f"latency median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s "
                    f"({len(samples)} requests)"
                )
    finally:
        cluster.close()
        if not pg.running():
            pg.start()
        drop_postgres_database(database)
        redis.close()
        pg.close()


def _spawn(argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "serve.log").open("wb") as log:
        return subprocess.Popen(argv, cwd=directory, stdout=log, stderr=subprocess.STDOUT)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def memory(n_runs: int = 40, size: int = 4 * 2**20, idle: float = 60.0) -> None:
    directory = Path(tempfile.mkdtemp(prefix="runplane-memory."))
    port = free_port()
    argv = [
        *RUNPLANE,
        "serve",
        "--database-url",
        f"sqlite:///{directory / 'runplane.db'}",
        "--port",
        str(port),
    ]
    proc = _spawn(argv, directory)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/ok", timeout=1).status_code == 200
            return False

        wait_until(up, 60, "runplane serve")
        client = get_client(url=url, api_key=None)
        before = _rss_kib(proc.pid)
        payload: Any = {"messages": [{"role": "user", "content": "x" * size}]}
        for _ in range(n_runs):
            thread = await client.threads.create()
            async for _part in client.runs.stream(thread["thread_id"], "echo", input=payload):
                pass
        after_runs = _rss_kib(proc.pid)
        await asyncio.sleep(idle)
        after_idle = _rss_kib(proc.pid)
        print(f"== memory: {n_runs} runs with {size // 2**20} MiB inputs on the in-process bus")
        print(
            f"   RSS: {before / 1024:.0f} MiB at start, {after_runs / 1024:.0f} MiB after the runs, "
            f"{after_idle / 1024:.0f} MiB after {idle:g} s idle"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--only", choices=["postgres", "redis"])
    parser.add_argument("--memory", action="store_true", help="measure RSS instead of outages")
    args = parser.parse_args()
    if args.memory:
        asyncio.run(memory())
        return
    for which in ("postgres", "redis"):
        if args.only in (None, which):
            asyncio.run(outage(which, args.runs, args.outage))


if __name__ == "__main__":
    main()
