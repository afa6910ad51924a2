"""Two checkouts of runplane side by side on SQLite, in interleaved rounds (so that the machine's
load falls on both alike): W1 (threads.create + runs.wait on `echo`, one at a time) and W2 (32
clients), with each server's CPU per run read from /proc. Prints the medians and the ratios.

    .venv/bin/python benchmarks/ab_checkouts.py /work/wt/before/src src --rounds 6 --w1-n 100 --w2-n 300

Not a test: it measures, it checks nothing but the echo's answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from langgraph_sdk import get_client

BENCH_APP = Path(os.environ.get("BENCH_APP", "/work/shared/bench/reference/app"))
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def serve(src: str, database: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        'import sys; from runplane.cli import main; sys.argv[0] = "runplane"; main()',
        "serve",
        *("--database-url", f"sqlite:///{database}", "--port", str(port), "--workers", "256"),
        *("--config", "langgraph.json", "--log-level", "WARNING"),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}  # the server runs in BENCH_APP
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=BENCH_APP, env=env, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{src}: the server did not come up (see {log})")


async def one_run(client: Any, i: int) -> None:
    thread = await client.threads.create()
    out = await client.runs.wait(thread["thread_id"], "echo", input={"messages": [f"m{i}"], "n": i})
    if out.get("n") != i:
        raise SystemExit(f"unexpected answer {out!r}")


async def w1(client: Any, pid: int, n: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    cpu0 = cpu_seconds(pid)
    for i in range(n):
        start = time.perf_counter()
        await one_run(client, i)
        latencies.append(time.perf_counter() - start)
    return latencies, (cpu_seconds(pid) - cpu0) / n


async def w2(client: Any, pid: int, n: int, clients: int) -> tuple[float, float]:
    numbers, cpu0, start = iter(range(n)), cpu_seconds(pid), time.perf_counter()

    async def one_client() -> None:
        for i in numbers:
            await one_run(client, i)

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return n / (time.perf_counter() - start), (cpu_seconds(pid) - cpu0) / n


async def main(args: argparse.Namespace) -> None:
    names = ["A", "B"]
    workdir = Path(tempfile.mkdtemp(prefix="runplane-ab-"))
    servers = {
        name: serve(src, workdir / f"{name}.db", workdir / f"{name}.log")
        for name, src in zip(names, (args.a, args.b), strict=True)
    }
    found: dict[str, dict[str, list[float]]] = {
        name: {"w1": [], "w1cpu": [], "w2": [], "w2cpu": []} for name in names
    }
    try:
        clients = {name: get_client(url=url) for name, (_, url) in servers.items()}
        for name in names:  # warm-up
            await w1(clients[name], servers[name][0].pid, 20)
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                latencies, cpu = await w1(clients[name], servers[name][0].pid, args.w1_n)
                found[name]["w1"] += latencies
                found[name]["w1cpu"].append(cpu)
            for name in order:
                rate, cpu = await w2(clients[name], servers[name][0].pid, args.w2_n, args.clients)
                found[name]["w2"].append(rate)
                found[name]["w2cpu"].append(cpu)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    medians = {
        name: {key: statistics.median(values) for key, values in found[name].items()} for name in names
    }
    for name, src in zip(names, (args.a, args.b), strict=True):
        m = medians[name]
        print(
            f"{name} {src}: W1 p50 {1000 * m['w1']:.2f} ms, W1 CPU/run {1000 * m['w1cpu']:.2f} ms, "
            f"W2 {m['w2']:.1f} runs/s, W2 CPU/run {1000 * m['w2cpu']:.2f} ms"
        )
    a, b = medians["A"], medians["B"]
    print(
        f"B/A: W1 p50 {b['w1'] / a['w1']:.2f}, W1 CPU/run {b['w1cpu'] / a['w1cpu']:.2f}, "
        f"W2 runs/s {b['w2'] / a['w2']:.2f}, W2 CPU/run {b['w2cpu'] / a['w2cpu']:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("a", help="src/ of the first checkout (A, the base)")
    parser.add_argument("b", help="src/ of the second checkout (B)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--w1-n", type=int, default=100)
    parser.add_argument("--w2-n", type=int, default=300)
    parser.add_argument("--clients", type=int, default=32)
    asyncio.run(main(parser.parse_args()))
