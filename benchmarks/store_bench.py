"""Store micro-benchmark: run lifecycles per second as the database grows, and list latency.

Not a test. Usage (from the repository root):

    python benchmarks/store_bench.py --stores memory,sqlite
    python benchmarks/store_bench.py --stores memory,sqlite,postgres --runs 10000
    python benchmarks/store_bench.py --stores postgresql://user@127.0.0.1:5432/postgres

Store names: `memory`, `sqlite` (a temporary file), `sqlite:///path.db`, `postgres` (a fresh
database on `RUNPLANE_TEST_POSTGRES_URL`'s server) or a `postgresql://` URL (a fresh database is
created on that server and dropped afterwards; the URL's own database is never written).

One op is one run lifecycle on its own thread: `create_run` (creating the thread) -> `claim_run` ->
`finish_run`, in one coroutine, so the numbers are per-call latency bound, not throughput under
concurrency. Rates are reported for the window ending at each checkpoint (1k, 10k, 100k runs):
both since the previous checkpoint and over the last 1,000 runs, which should stay flat as the
tables grow. Then one thread gets 1,000 finished runs, and `list_runs` is timed with limit 1000
and with a page of 10 (median of repeated calls).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runplane.core.models import NewRun, Outcome, RunFilter
from runplane.core.store import Store
from runplane.stores import open_store

CHECKPOINTS = (1_000, 10_000, 100_000)
RECENT = 1_000
LIST_RUNS = 1_000
LIST_REPEATS = 20
SUCCESS = Outcome(status="success", thread_status="idle")


@dataclass
class Result:
    name: str
    #: checkpoint -> (rate since the previous checkpoint, rate over the last RECENT runs), ops/s.
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)
    list_all_ms: float | None = None
    list_page_ms: float | None = None
    note: str = ""


async def lifecycle(store: Store, n: int) -> None:
    run_id = f"run-{n:07d}"
    await store.create_run(
        NewRun(run_id=run_id, thread_id=f"thread-{n:07d}", assistant_id="bench", if_not_exists="create")
    )
    run = await store.claim_run("bench-worker", 30.0)
    if run is None or run.run_id != run_id:
        raise RuntimeError(f"claimed {run and run.run_id!r}, expected {run_id!r}")
    await store.finish_run(run_id, run.attempt, SUCCESS)


async def bench_store(name: str, url: str, runs: int, budget: float | None) -> Result:
    result = Result(name)
    store = open_store(url)
    await store.open()
    try:
        checkpoints = [c for c in CHECKPOINTS if c <= runs] or [runs]
        started = window_start = time.perf_counter()
        recent_start = started
        previous = 0
        recent_starts = {max(0, c - RECENT) for c in checkpoints}
        for n in range(1, checkpoints[-1] + 1):
            if n - 1 in recent_starts:
                recent_start = time.perf_counter()
            await lifecycle(store, n)
            if n in checkpoints:
                now = time.perf_counter()
                recent = min(RECENT, n)
                result.rates[n] = ((n - previous) / (now - window_start), recent / (now - recent_start))
                print(
                    f"  {name}: {n:>7,} runs, {result.rates[n][0]:>8,.0f} ops/s since {previous:,}, "
                    f"{result.rates[n][1]:>8,.0f} ops/s over the last {recent:,}",
                    file=sys.stderr,
                    flush=True,
                )
                previous, window_start = n, now
                if budget is not None and now - started > budget and n != checkpoints[-1]:
                    result.note = f"stopped after {n:,} runs (budget {budget:.0f} s)"
                    break
        result.list_all_ms, result.list_page_ms = await bench_list(store)
    finally:
        await store.close()
    return result


async def bench_list(store: Store) -> tuple[float, float]:
    thread_id = "thread-list"
    for n in range(LIST_RUNS):
        run_id = f"list-{n:05d}"
        await store.create_run(
            NewRun(run_id=run_id, thread_id=thread_id, assistant_id="bench", if_not_exists="create")
        )
        run = await store.claim_run("bench-worker", 30.0)
        assert run is not None and run.run_id == run_id
        await store.finish_run(run_id, run.attempt, SUCCESS)

    async def median_ms(filter: RunFilter, expected: int) -> float:
        times = []
        for _ in range(LIST_REPEATS):
            start = time.perf_counter()
            listed = await store.list_runs(thread_id, "", filter)
            times.append(time.perf_counter() - start)
            assert len(listed) == expected
        return statistics.median(times) * 1000

    return await median_ms(RunFilter(limit=1000), LIST_RUNS), await median_ms(RunFilter(limit=10), 10)


# -- PostgreSQL scratch databases -----------------------------------------------------------------


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def create_postgres_database(server_url: str) -> str:
    import psycopg  # optional extra: only needed when benchmarking PostgreSQL
    from psycopg import sql

    name = f"runplane_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url, name)


def drop_postgres_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(_with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- main -----------------------------------------------------------------------------------------


def format_table(results: list[Result]) -> str:
    checkpoints = sorted({c for result in results for c in result.rates})
    header = ["store"] + [f"ops/s @{c // 1000}k (last 1k)" for c in checkpoints] + ["list 1000", "list 10"]
    rows = [header]
    for result in results:
        row = [result.name]
        for c in checkpoints:
            if c in result.rates:
                window, recent = result.rates[c]
                row.append(f"{window:,.0f} ({recent:,.0f})")
            else:
                row.append("-")
        row.append("-" if result.list_all_ms is None else f"{result.list_all_ms:.2f} ms")
        row.append("-" if result.list_page_ms is None else f"{result.list_page_ms:.2f} ms")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    notes = [f"{result.name}: {result.note}" for result in results if result.note]
    return "\n".join(lines + notes)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="memory,sqlite", help="comma-separated store names or URLs")
    parser.add_argument("--runs", type=int, default=CHECKPOINTS[-1], help="run lifecycles per store")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds per store; checked at each checkpoint (a 100k window is not cut short)",
    )
    args = parser.parse_args(argv)

    results = []
    with tempfile.TemporaryDirectory(prefix="runplane-bench-") as scratch:
        for spec in [s.strip() for s in args.stores.split(",") if s.strip()]:
            cleanup = None
            if spec == "memory":
                name, url = "memory", "memory:"
            elif spec == "sqlite":
                name, url = "sqlite", f"sqlite:///{Path(scratch) / 'bench.db'}"
            elif spec.startswith("sqlite:"):
                name, url = "sqlite", spec
            elif spec == "postgres" or spec.startswith(("postgres://", "postgresql://")):
                server = os.environ.get("RUNPLANE_TEST_POSTGRES_URL") if spec == "postgres" else spec
                if not server:
                    parser.error("postgres needs RUNPLANE_TEST_POSTGRES_URL or a postgresql:// URL")
                name, url = "postgres", create_postgres_database(server)
                cleanup = url
            else:
                parser.error(f"unknown store {spec!r}")
            print(f"{name}: {url if cleanup is None else 'fresh database'}", file=sys.stderr)
            try:
                results.append(await bench_store(name, url, args.runs, args.budget))
            finally:
                if cleanup is not None:
                    drop_postgres_database(cleanup)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
