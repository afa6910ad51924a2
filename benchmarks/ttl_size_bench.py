"""Database size after N runs, with thread TTLs against without.

Not a test. Usage (from the repository root):

    python benchmarks/ttl_size_bench.py --runs 10000
    python benchmarks/ttl_size_bench.py --runs 2000 --ttl-minutes 0.01 --sweep-seconds 0.5

Each run is what a chat app does: a new thread (with `ttl`, or without), one run of the demo `echo`
graph with a message, waited for. The whole stack runs in this process on one SQLite file (runplane's
tables, LangGraph's checkpoints and store), composed as `runplane serve` composes it, with its
workers and its TTL sweeper. Reported per mode: the file size (with its WAL) and the live bytes
(pages in use: SQLite reuses freed pages rather than shrinking the file), and the bytes per run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from runplane.cli import compose, load_settings
from runplane.core.graphs import default_assistant_id
from runplane.core.models import ThreadTtl

CONCURRENCY = 16


def sizes(path: Path) -> tuple[int, int]:
    """(bytes on disk incl. the WAL, bytes of pages in use)."""
    on_disk = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with sqlite3.connect(path) as db:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return on_disk, (pages - free) * page_size


async def run_mode(runs: int, ttl_minutes: float | None, workdir: Path) -> tuple[int, int, int, float]:
    path = workdir / "runplane.db"
    settings = load_settings(database_url=f"sqlite:///{path}", workers=CONCURRENCY, config=None)
    assistant_id = default_assistant_id("echo")
    started = time.perf_counter()
    async with compose(settings, with_workers=True) as services:
        manager = services.manager
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(n: int) -> None:
            async with semaphore:
                thread = await manager.create_thread()
                if ttl_minutes is not None:
                    await manager.set_thread_ttl(thread.thread_id, ThreadTtl(minutes=ttl_minutes))
                message = {"role": "user", "content": f"hello number {n}, how are you today?"}
                run = await manager.create_run(
                    thread.thread_id,
                    assistant_id,
                    kwargs={"graph_id": "echo", "input": {"messages": [message]}, "stream_mode": ["values"]},
                )
                await manager.wait_for_run(run.run_id, thread_id=thread.thread_id)

        await asyncio.gather(*(one(n) for n in range(runs)))
        elapsed = time.perf_counter() - started
        threads = await manager.count_threads()
    on_disk, live = sizes(path)
    return on_disk, live, threads, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--ttl-minutes", type=float, default=0.02, help="thread TTL (0.02 = 1.2 s)")
    parser.add_argument("--sweep-seconds", type=float, default=1.0)
    args = parser.parse_args()
    os.environ["RUNPLANE_SWEEP_SECONDS"] = str(args.sweep_seconds)
    print(f"{args.runs} runs, each on a new thread, demo `echo` graph, SQLite, {CONCURRENCY} workers")
    print(f"{'mode':<28}{'file+WAL':>12}{'live':>12}{'per run':>10}{'threads left':>14}{'runs/s':>8}")
    for label, ttl in (("no TTL", None), (f"ttl={args.ttl_minutes} min", args.ttl_minutes)):
        with tempfile.TemporaryDirectory() as workdir:
            on_disk, live, threads, elapsed = asyncio.run(run_mode(args.runs, ttl, Path(workdir)))
        print(
            f"{label:<28}{on_disk / 1e6:>10.2f}MB{live / 1e6:>10.2f}MB{live / args.runs:>9.0f}B"
            f"{threads:>14}{args.runs / elapsed:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
