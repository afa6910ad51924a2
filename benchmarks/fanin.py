"""Issue 14's 10,000 x 2 s knob, with a client that is not the bottleneck.

    .venv/bin/python benchmarks/fanin.py                       10,000 x 2 s on SQLite
    .venv/bin/python benchmarks/fanin.py --n 200 --database-url memory://
    .venv/bin/python benchmarks/fanin.py --url http://127.0.0.1:8123 --pid 4242   a running server
    .venv/bin/python benchmarks/fanin.py --bare                the library alone: the floor

agentbench's W6 (create thread, create run, join, read status: four SDK calls per run through one
`httpx` pool of 100 connections) cannot drive 10,000 runs on a 2-core machine: against
`null_server.py`, a server that does nothing, it had not finished after 10 minutes. This one asks
the server for the same work with the fewest requests and the least client CPU: one
`POST /threads/{id}/runs` per run (`if_not_exists: create` makes the thread), `--connections`
kept-alive connections, then one `GET .../join` per run. It serves the reference app's `sleepy`
graph with `runplane serve --workers N` (every run executes at once) unless `--url` is given, and
prints the create phase, the wall time, the server's CPU per run and its peak RSS. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import BENCH_APP, Server


def cpu_and_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The largest RSS a process reaches while this samples it (every 50 ms, on a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, cpu_and_rss(self.pid)[1])

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def fan_in(url: str, n: int, seconds: float, connections: int) -> dict[str, float]:
    # Kept-alive connections expire on the client before the server's 5 s keep-alive timeout, so a
    # request never races the server closing an idle connection under it.
    limits = httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        gate = asyncio.Semaphore(connections)
        runs: list[tuple[str, str]] = []

        async def create(i: int) -> None:
            thread_id = str(uuid.uuid4())
            body = {"assistant_id": "sleepy", "input": {"seconds": seconds, "tag": f"f{i}"}}
            async with gate:
                response = await client.post(
                    f"/threads/{thread_id}/runs", json={**body, "if_not_exists": "create"}
                )
            response.raise_for_status()
            runs.append((thread_id, response.json()["run_id"]))

        async def join(thread_id: str, run_id: str) -> bool:
            async with gate:
                response = await client.get(f"/threads/{thread_id}/runs/{run_id}/join")
            return response.status_code == 200 and response.json().get("slept") == seconds

        started = time.perf_counter()
        await asyncio.gather(*(create(i) for i in range(n)))
        created = time.perf_counter() - started
        joined = await asyncio.gather(*(join(t, r) for t, r in runs))
        wall = time.perf_counter() - started
    return {"create_phase_s": created, "wall_s": wall, "ok": float(sum(joined))}


async def bare(n: int, seconds: float, path: str) -> dict[str, float]:
    """The floor: the reference app's `sleepy` graph, `n` invocations at once, in this process, with
    LangGraph's own `AsyncSqliteSaver` (no server, no HTTP)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    sys.path.insert(0, str(BENCH_APP))
    from graphs import _sleepy  # type: ignore[import-not-found]

    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        graph = _sleepy.compile(checkpointer=saver)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                graph.ainvoke({"seconds": seconds}, {"configurable": {"thread_id": str(uuid.uuid4())}})
                for _ in range(n)
            )
        )
        wall = time.perf_counter() - started
    return {"wall_s": wall, "ok": float(sum(r.get("slept") == seconds for r in results))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--url", default=None, help="a running server instead (give --pid)")
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--bare", action="store_true", help="the library's floor instead: no server")
    args = parser.parse_args(argv)
    if args.bare:
        cpu_before = time.process_time()
        floor = asyncio.run(bare(args.n, args.seconds, str(Path(tempfile.mkdtemp()) / "bare.db")))
        cpu = time.process_time() - cpu_before
        print(
            f"{args.n} x {args.seconds:g} s, bare LangGraph + AsyncSqliteSaver in-process: all done at "
            f"{floor['wall_s']:.2f} s ({int(floor['ok'])} ok); CPU {1000 * cpu / args.n:.2f} ms/run"
        )
        return 0 if int(floor["ok"]) == args.n else 1
    server = None
    if args.url is None:
        out = Path(tempfile.mkdtemp(prefix="runplane-fanin."))
        database_url = args.database_url or f"sqlite:///{out / 'fanin.db'}"
        server = Server(args.python, database_url, max(256, args.n), out / "serve.log")
        server.wait_ready()
        url, pid = server.url, server.process.pid
    elif args.pid is None:
        parser.error("--url needs the server's --pid (its CPU and RSS are read from /proc)")
    else:
        url, pid = args.url, args.pid
    try:
        cpu_before = cpu_and_rss(pid)[0]
        with PeakRss(pid) as rss:
            result = asyncio.run(fan_in(url, args.n, args.seconds, args.connections))
        cpu = cpu_and_rss(pid)[0] - cpu_before
    finally:
        if server is not None:
            server.stop()
    peak = rss.peak
    print(
        f"{args.n} x {args.seconds:g} s on {args.url or args.database_url or 'sqlite'}: "
        f"created in {result['create_phase_s']:.2f} s, all joined at {result['wall_s']:.2f} s "
        f"({int(result['ok'])} ok); server CPU {1000 * cpu / args.n:.2f} ms/run, peak RSS {peak:.0f} MB"
    )
    return 0 if int(result["ok"]) == args.n else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
