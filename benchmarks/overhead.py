"""The server against the library it wraps (issue 14): the bare floor and runplane side by side.

    .venv/bin/python benchmarks/overhead.py                      issue 14's table, with the client's floor
    .venv/bin/python benchmarks/overhead.py --scale tiny         smoke scale (CI checks it completes)
    .venv/bin/python benchmarks/overhead.py --w6-n 10000         the 10,000 x 2 s fan-in knob
    .venv/bin/python benchmarks/overhead.py --modes sqlite       one store only
    BENCH_SRC=/work/wt/before/src .venv/bin/python benchmarks/overhead.py   measure another checkout

In one session: runs `$BENCH_DIR/bare_limit.py` (the echo graph invoked in-process with LangGraph's
own `AsyncSqliteSaver`, no server: the floor), then for each store serves `$BENCH_APP` with
`runplane serve --workers 256` and runs `$BENCH_DIR/agentbench.py` against it (W1, W2, W3, W6) with
the server's pid, so that it reads the server's CPU and RSS. Prints one table, each server figure
with its ratio to the floor measured in the same session. Mode `null` serves `null_server.py`
instead: no store, no worker, no graph, only HTTP; its column is what agentbench's own client and
the machine take before a server does anything (W6's create phase is mostly that). CPU per run is
process CPU seconds over runs: it is the figure a shared, noisy machine disturbs least. Not a
test: the CI smoke run checks that it completes and prints the table, never how fast.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/work/shared/bench"))
BENCH_APP = Path(os.environ.get("BENCH_APP", str(BENCH_DIR / "reference" / "app")))

# agentbench flags per scale; W6's count and duration have their own knobs.
SCALES: dict[str, dict[str, Any]] = {
    "full": {"bare_n": 1000, "w1_n": 200, "w2_n": 1000, "w2_c": 32, "w3_k": 1000, "w3_reps": 3},
    "quick": {"bare_n": 300, "w1_n": 60, "w2_n": 300, "w2_c": 32, "w3_k": 1000, "w3_reps": 2},
    "tiny": {"bare_n": 20, "w1_n": 5, "w2_n": 16, "w2_c": 4, "w3_k": 20, "w3_reps": 1},
}
DEFAULT_W6 = {"full": 200, "quick": 200, "tiny": 4}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_floor(python: str, n: int) -> dict[str, Any]:
    """bare_limit.py with the SQLite saver: 50 warm-up runs, n one at a time, n with 32 tasks."""
    cpu0 = children_cpu_s()
    out = subprocess.run(
        [python, str(BENCH_DIR / "bare_limit.py"), "--saver", "sqlite", "--n", str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    cpu = children_cpu_s() - cpu0
    floor: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    floor["cpu_ms_per_run"] = 1000.0 * cpu / (50 + 2 * n)
    return floor


class Server:
    """`runplane serve` on one store, in its own process group, from BENCH_SRC when set."""

    def __init__(self, python: str, database_url: str, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if os.environ.get("BENCH_SRC"):
            env["PYTHONPATH"] = os.environ["BENCH_SRC"]
        command = self.command(python, database_url, workers)
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(command, cwd=BENCH_APP, env=env, stdout=sink, stderr=sink)

    def command(self, python: str, database_url: str, workers: int) -> list[str]:
        if database_url == "null":
            return [python, str(ROOT / "benchmarks" / "null_server.py"), "--port", str(self.port)]
        return [
            python,
            "-c",
            'import sys; from runplane.cli import main; sys.argv[0] = "runplane"; main()',
            "serve",
            "--database-url",
            database_url,
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--config",
            "langgraph.json",
            "--log-level",
            "WARNING",
        ]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/ok", timeout=1.0):
                    return
            except OSError:
                time.sleep(0.2)
        sys.stderr.write(self.log.read_text(errors="replace"))
        raise SystemExit(f"runplane serve did not come up at {self.url}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_server_mode(
    python: str, mode: str, args: argparse.Namespace, scale: dict[str, Any], out: Path
) -> dict[str, Any]:
    database_url = {"memory": "memory://", "null": "null"}.get(mode, f"sqlite:///{out / 'bench.db'}")
    # Every fan-in run executes at once (the 10,000-run knob needs as many workers).
    server = Server(python, database_url, max(args.workers, args.w6_n), out / f"serve-{mode}.log")
    try:
        server.wait_ready()
        result_file = out / f"{mode}.json"
        command = [
            python,
            str(BENCH_DIR / "agentbench.py"),
            "--url",
            server.url,
            "--pid",
            str(server.process.pid),
            "--label",
            f"runplane {mode}",
            "--json",
            str(result_file),
            "--only",
            "W1,W2,W3,W6",
            "--w1-n",
            str(scale["w1_n"]),
            "--w2-n",
            str(scale["w2_n"]),
            "--w2-c",
            str(scale["w2_c"]),
            "--w3-k",
            str(scale["w3_k"]),
            "--w3-tokens",
            "5",
            "--w3-reps",
            str(scale["w3_reps"]),
            "--w6-n",
            str(args.w6_n),
            "--w6-seconds",
            str(args.w6_seconds),
            "--w6-create-conc",
            "50",
        ]
        if args.profile_mode == mode and args.profile_out:
            # py-spy over the whole agentbench session of this mode, for the report.
            py_spy = Path(python).parent / "py-spy"
            profiler = subprocess.Popen(
                [
                    str(py_spy),
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "-o",
                    args.profile_out,
                    "--format",
                    "speedscope",
                    "--rate",
                    "200",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            profiler = None
        bench = subprocess.run(command, capture_output=True, text=True)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
        (out / f"{mode}.out").write_text(bench.stdout + bench.stderr)
        if bench.returncode != 0 or not result_file.exists():
            sys.stderr.write(bench.stdout + bench.stderr)
            raise SystemExit(f"agentbench failed on {mode}")
        results: dict[str, Any] = json.loads(result_file.read_text())["results"]
        return results
    finally:
        server.stop()


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    w1, w2, w3, w6 = (results[key] for key in ("W1", "W2", "W3", "W6"))
    w2_ok = w2["metrics"].get("ok") or 0
    custom = w3["metrics"]["custom"]
    errors = sum(results[key]["errors"]["total"] for key in ("W1", "W2", "W3", "W6"))
    return {
        "w1_p50_ms": w1["metrics"]["latency_create_plus_wait"].get("p50_ms"),
        "w1_wait_p50_ms": w1["metrics"]["latency_wait_only"].get("p50_ms"),
        "w2_runs_per_s": w2["metrics"].get("runs_per_s"),
        "w2_cpu_ms_per_run": 1000.0 * w2["server_cpu_s"] / w2_ok
        if w2_ok and w2["server_cpu_s"] is not None
        else None,
        "w3_events_per_s": custom.get("events_per_s_e2e_median"),
        "w3_first_event_ms": custom.get("ttfe_ms_median"),
        "w6_wall_s": w6["metrics"].get("wall_s"),
        "w6_rss_mb": (w6.get("server_rss_mb") or {}).get("peak"),
        "w6_success": (w6["metrics"].get("final_status_counts") or {}).get("success", 0),
        "errors": errors,
    }


def cell(value: float | None, unit: str, floor: float | None = None, fmt: str = "{:,.1f}") -> str:
    if value is None:
        return "n/a"
    text = fmt.format(value) + unit
    if floor:
        text += f" ({value / floor:.2f}x)"
    return text


def table(floor: dict[str, Any], modes: dict[str, dict[str, Any]], w6_n: int, w6_seconds: float) -> str:
    names = list(modes)
    head = (
        "| | bare floor (SQLite saver) | "
        + " | ".join("null server (client floor)" if name == "null" else f"runplane {name}" for name in names)
        + " |"
    )
    rows = [head, "|---|---|" + "---|" * len(names)]
    floor_p50, floor_c32, floor_cpu = (
        floor["seq"]["p50_ms"],
        floor["c32"]["runs_per_s"],
        floor["cpu_ms_per_run"],
    )

    def row(label: str, floor_text: str, render: Any) -> None:
        rows.append(f"| {label} | {floor_text} | " + " | ".join(render(modes[name]) for name in names) + " |")

    row(
        "W1 create+wait p50 (x floor)",
        cell(floor_p50, " ms", fmt="{:.1f}"),
        lambda m: (
            cell(m["w1_p50_ms"], " ms", floor_p50, "{:.1f}") + f", +{m['w1_p50_ms'] - floor_p50:.1f} ms"
        ),
    )
    row("W1 runs.wait only p50", "", lambda m: cell(m["w1_wait_p50_ms"], " ms", None, "{:.1f}"))
    row(
        "W2 32 clients (x floor)",
        cell(floor_c32, " runs/s"),
        lambda m: cell(m["w2_runs_per_s"], " runs/s", floor_c32),
    )
    row(
        "server CPU per run, W2 (x floor)",
        cell(floor_cpu, " ms", fmt="{:.2f}"),
        lambda m: cell(m["w2_cpu_ms_per_run"], " ms", floor_cpu, "{:.2f}"),
    )
    row("W3 custom events, end-to-end", "", lambda m: cell(m["w3_events_per_s"], "/s", None, "{:,.0f}"))
    row("W3 first custom event", "", lambda m: cell(m["w3_first_event_ms"], " ms", None, "{:.1f}"))
    row(
        f"W6 {w6_n} x {w6_seconds:g} s runs, wall",
        f"{w6_seconds:g} s ideal",
        lambda m: cell(m["w6_wall_s"], " s", None, "{:.2f}") + f" ({m['w6_success']} ok)",
    )
    row("W6 server RSS peak", "", lambda m: cell(m["w6_rss_mb"], " MB", None, "{:.0f}"))
    row("errors (all workloads)", "", lambda m: str(m["errors"]))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=sorted(SCALES), default="full")
    parser.add_argument("--modes", default="null,sqlite,memory", help="comma list of null, sqlite, memory")
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--w6-n", type=int, default=None, help="fan-in runs (issue 14's knob: 10000)")
    parser.add_argument("--w6-seconds", type=float, default=2.0)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", dest="json_out", default=None, help="write the summary JSON here")
    parser.add_argument("--profile-mode", default=None, help="py-spy the server of this mode (needs py-spy)")
    parser.add_argument("--profile-out", default=None, help="speedscope file for --profile-mode")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    if args.w6_n is None:
        args.w6_n = DEFAULT_W6[args.scale]
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = [mode for mode in modes if mode not in ("null", "sqlite", "memory")]
    if unknown:
        parser.error(f"unknown modes {unknown}: choose from null, sqlite, memory")
    out = Path(tempfile.mkdtemp(prefix="runplane-overhead."))
    print(
        f"[overhead] floor: bare_limit.py --saver sqlite --n {scale['bare_n']}", file=sys.stderr, flush=True
    )
    floor = run_floor(args.python, scale["bare_n"])
    summaries: dict[str, dict[str, Any]] = {}
    for mode in modes:
        print(
            f"[overhead] runplane serve on {mode}, source {os.environ.get('BENCH_SRC') or 'installed'}",
            file=sys.stderr,
            flush=True,
        )
        summaries[mode] = summarize(run_server_mode(args.python, mode, args, scale, out))
    print(
        f"source: {os.environ.get('BENCH_SRC') or 'installed runplane'}; scale {args.scale}; results in {out}"
    )
    print(table(floor, summaries, args.w6_n, args.w6_seconds))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"floor": floor, "modes": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
