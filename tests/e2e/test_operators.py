"""Operators' view of real processes: `/metrics` of two servers sharing one SQLite database, the CLI
against an authenticated server, JSON logs carrying run ids, and `runplane doctor`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import Config
from prometheus_client.parser import text_string_to_metric_families

from tests._services import require_redis_url
from tests.e2e._procs import free_port, wait_until

pytestmark = pytest.mark.slow

RUNPLANE = [sys.executable, "-m", "runplane.cli"]
KEY = "sk-operator-test"
AUTH = {"x-api-key": KEY}
LOGGING_APP = Path(__file__).with_name("logging_app") / "langgraph.json"
#: Enough steps for a run to stay running while the test looks at it (LangGraph counts each step).
SLOW = {"steps": 200, "delay": 0.1}
SLOW_CONFIG: Config = {"recursion_limit": 1000}


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")}
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


class Server:
    """One `runplane serve` process, its log, and its metrics."""

    def __init__(self, directory: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*RUNPLANE, "serve", "--port", str(self.port), *args],
                cwd=directory,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, 60, f"{name} to start")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited:\n{self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/ok", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        answer = httpx.get(f"{self.url}/metrics", headers=AUTH, timeout=10)
        assert answer.status_code == 200, answer.text
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    def value(self, name: str, **labels: str) -> float:
        return self.metrics().get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def process_label(self) -> str:
        [labels] = [dict(k) for k in self.metrics()["runplane_sse_subscribers"]]
        return labels["process"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNPLANE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=90, check=False
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Path]]:
    """An API-only server and a server with one worker, sharing one SQLite file and one API key."""
    directory = tmp_path_factory.mktemp("operators")
    database = f"sqlite:///{directory / 'shared.db'}"
    env = _env(RUNPLANE_API_KEYS=f"{KEY}:operator")
    api_only = Server(directory, "api", ["--database-url", database, "--workers", "0"], env)
    servers = [api_only]
    try:
        worker = Server(directory, "worker", ["--database-url", database, "--workers", "1"], env)
        servers.append(worker)
        yield api_only, worker, directory
    finally:
        for server in servers:
            server.stop()


def test_two_processes_report_the_same_queue_and_their_own_counters(
    pair: tuple[Server, Server, Path],
) -> None:
    api_only, worker, _ = pair
    before_api = api_only.value("runplane_runs_created_total", graph="slow", process=api_only.process_label())
    client = get_sync_client(url=api_only.url, api_key=KEY)
    runs = []
    for _ in range(3):
        thread = client.threads.create()
        runs.append(client.runs.create(thread["thread_id"], "slow", input=SLOW, config=SLOW_CONFIG))

    def settled() -> bool:
        return all(
            server.value("runplane_active_runs") == 1 and server.value("runplane_queue_depth") == 2
            for server in (api_only, worker)
        )

    # The single worker takes one run; the other two wait. Both processes read it from the database.
    wait_until(settled, 30, "one running and two pending runs on both processes' /metrics")
    assert api_only.value("runplane_busy_workers") == worker.value("runplane_busy_workers") == 1

    api_label, worker_label = api_only.process_label(), worker.process_label()
    assert api_label != worker_label
    created = api_only.value("runplane_runs_created_total", graph="slow", process=api_label)
    assert created - before_api == 3
    assert worker.value("runplane_runs_created_total", graph="slow", process=worker_label) == 0
    assert worker.value("runplane_run_attempts_total", graph="slow", process=worker_label) >= 1
    assert api_only.value("runplane_run_attempts_total", graph="slow", process=api_label) == 0

    # An SSE subscriber is counted by the process serving it, for as long as it listens. (Streams
    # need the worker's own process here: SQLite gives each process an in-process bus.)
    near = get_sync_client(url=worker.url, api_key=KEY)
    running = next(r for r in runs if near.runs.get(r["thread_id"], r["run_id"])["status"] == "running")
    heard: list[str] = []
    listener = threading.Thread(
        target=lambda: heard.extend(
            part.event for part in near.runs.join_stream(running["thread_id"], running["run_id"])
        ),
        daemon=True,
    )
    listener.start()
    wait_until(
        lambda: worker.value("runplane_sse_subscribers", process=worker_label) == 1, 20, "an SSE subscriber"
    )
    assert api_only.value("runplane_sse_subscribers", process=api_label) == 0
    # The joined stream carries the run's steps (one every 0.1 s) before anything is cancelled.
    wait_until(lambda: "values" in heard, 20, "a values event on the joined stream")
    # The pending ones first: the worker's only slot is taken, so none of them can start meanwhile.
    for run in sorted(runs, key=lambda r: r["run_id"] == running["run_id"]):
        near.runs.cancel(run["thread_id"], run["run_id"], wait=True, action="interrupt")
    listener.join(timeout=20)
    assert not listener.is_alive()
    wait_until(
        lambda: worker.value("runplane_sse_subscribers", process=worker_label) == 0, 20, "no subscriber"
    )
    assert worker.value("runplane_cancels_total", action="interrupt", process=worker_label) == 3
    assert api_only.value("runplane_cancels_total", action="interrupt", process=api_label) == 0
    # The running one ended in the worker; the two pending ones were settled at once (never finished
    # by a worker, so they count as cancels only).
    assert (
        worker.value("runplane_runs_finished_total", graph="slow", status="interrupted", process=worker_label)
        == 1
    )
    assert api_only.value("runplane_queue_depth") == 0 and api_only.value("runplane_active_runs") == 0


def test_cli_needs_and_uses_the_api_key(pair: tuple[Server, Server, Path]) -> None:
    _, server, directory = pair  # the process that executes runs hears their events
    client = get_sync_client(url=server.url, api_key=KEY)
    thread = client.threads.create()
    run = client.runs.create(
        thread["thread_id"], "slow", input={"steps": 3, "delay": 0.05}, stream_mode=["values", "custom"]
    )
    url = ["--url", server.url]

    refused = cli("runs", "ls", thread["thread_id"], *url, cwd=directory, env=_env())
    assert refused.returncode == 1
    assert "401" in refused.stderr and "RUNPLANE_API_KEY" in refused.stderr

    keyed = _env(RUNPLANE_API_KEY=KEY)
    tail = cli("runs", "tail", thread["thread_id"], run["run_id"], *url, "--json", cwd=directory, env=keyed)
    assert tail.returncode == 0, tail.stderr
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    steps = [e["data"]["step"] for e in events if e["event"] == "custom"]
    assert steps == [0, 1, 2]
    assert events[-1]["event"] == "values" and events[-1]["data"]["done"] == [0, 1, 2]

    listed = cli("runs", "ls", thread["thread_id"], *url, "--json", cwd=directory, env=keyed)
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run["run_id"]]
    show = ["runs", "show", thread["thread_id"], run["run_id"], *url, "--api-key", KEY]
    shown = cli(*show, cwd=directory, env=_env())
    assert shown.returncode == 0 and "success" in shown.stdout

    slow = client.runs.create(thread["thread_id"], "slow", input=SLOW, config=SLOW_CONFIG)
    cancelled = cli(
        "runs", "cancel", thread["thread_id"], slow["run_id"], *url, "--json", cwd=directory, env=keyed
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "interrupted"
    threads = cli("threads", "ls", *url, "--json", cwd=directory, env=keyed)
    assert thread["thread_id"] in {t["thread_id"] for t in json.loads(threads.stdout)}


class _MultiLineSse(BaseHTTPRequestHandler):
    """A server whose SSE payloads span several `data:` lines (legal SSE; some servers pretty-print)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'event: values\ndata: {"a": 1,\ndata:  "b": [1,\ndata: 2]}\nid: 1\n\n')
        self.wfile.write(b"event: end\ndata: null\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_tail_joins_multi_line_data(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MultiLineSse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        thread_id, run_id = "6f1c6a0e-8d63-4c38-9f3e-1f6f1c0d5a11", "0b9f3e55-3a8e-4d0e-9a52-6a5d1d2c7e01"
        tail = cli("runs", "tail", thread_id, run_id, "--url", url, "--json", cwd=tmp_path, env=_env())
        assert tail.returncode == 0, tail.stderr
        first = json.loads(tail.stdout.splitlines()[0])
        assert first == {"id": "1", "event": "values", "data": {"a": 1, "b": [1, 2]}}
        human = cli("runs", "tail", thread_id, run_id, "--url", url, cwd=tmp_path, env=_env())
        assert '{"a": 1, "b": [1, 2]}' in human.stdout
    finally:
        server.shutdown()
        server.server_close()


def test_json_logs_carry_the_run_of_every_record(tmp_path: Path) -> None:
    env = _env(RUNPLANE_API_KEYS=f"{KEY}:operator")
    database = f"sqlite:///{tmp_path / 'logs.db'}"
    args = ["--database-url", database, "--config", str(LOGGING_APP), "--log-format", "json"]
    server = Server(tmp_path, "json", args, env)
    try:
        client = get_sync_client(url=server.url, api_key=KEY)
        thread = client.threads.create()
        run = client.runs.create(thread["thread_id"], "talker", input={"said": "hello"})
        client.runs.join(thread["thread_id"], run["run_id"])
    finally:
        server.stop()
    lines = [line for line in server.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    [said] = [r for r in records if r["logger"] == "talker.app"]
    assert said["message"] == "node says hello"
    assert said["run_id"] == run["run_id"] and said["thread_id"] == thread["thread_id"]
    assert said["attempt"] == 1 and str(server.proc.pid) in said["worker_id"]
    # Records outside any run carry no run.
    assert any("run_id" not in r for r in records)


def test_doctor_finds_a_broken_graph_and_a_busy_port(tmp_path: Path) -> None:
    (tmp_path / "graphs.py").write_text("import not_a_module_anyone_has\n")
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": {"agent": "./graphs.py:graph"}}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        database = f"sqlite:///{tmp_path / 'doctor.db'}"
        result = cli("doctor", "--port", port, "--database-url", database, cwd=tmp_path, env=_env())
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    [graphs] = [line for line in lines if "graphs:" in line]
    assert graphs.startswith("FAIL") and "not_a_module_anyone_has" in graphs
    [port_line] = [line for line in lines if "port:" in line]
    assert port_line.startswith("FAIL") and f"port {port} on 127.0.0.1 is busy" in port_line
    assert "--port" in port_line  # what to do about it
    [db_line] = [line for line in lines if "database:" in line]
    assert db_line.startswith("ok")

    healthy = tmp_path / "healthy"
    healthy.mkdir()
    fine = cli("doctor", "--port", str(free_port()), "--database-url", database, cwd=healthy, env=_env())
    assert fine.returncode == 0, fine.stdout
    assert all(line.startswith("ok") for line in fine.stdout.splitlines())


def test_doctor_reports_an_unreachable_database_and_redis(tmp_path: Path) -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    redis = f"redis://127.0.0.1:{free_port()}/0"
    args = ["--port", str(free_port()), "--database-url", url, "--redis-url", redis]
    result = cli("doctor", *args, cwd=tmp_path, env=_env())
    assert result.returncode == 1
    [db_line] = [line for line in result.stdout.splitlines() if "database:" in line]
    assert db_line.startswith("FAIL") and "RUNPLANE_DATABASE_URL" in db_line
    [redis_line] = [line for line in result.stdout.splitlines() if "redis:" in line]
    assert redis_line.startswith("FAIL") and "RUNPLANE_REDIS_URL" in redis_line


@pytest.mark.redis
def test_doctor_accepts_a_running_redis(tmp_path: Path) -> None:
    redis = require_redis_url()
    database = f"sqlite:///{tmp_path / 'doctor.db'}"
    args = ["--port", str(free_port()), "--database-url", database, "--redis-url", redis]
    result = cli("doctor", *args, cwd=tmp_path, env=_env())
    assert result.returncode == 0, result.stdout
    assert any(line.startswith("ok") and "redis:" in line for line in result.stdout.splitlines())


def test_a_worker_process_serves_its_metrics(tmp_path: Path) -> None:
    port = free_port()
    env = _env(RUNPLANE_API_KEYS=f"{KEY}:operator")
    database = f"sqlite:///{tmp_path / 'worker.db'}"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*RUNPLANE, "worker", "--database-url", database, "--metrics-port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/metrics"

    def answering() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"worker exited:\n{log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    try:
        wait_until(answering, 60, "the worker's /metrics")
        assert httpx.get(url).status_code == 401  # protected like the API
        answer = httpx.get(url, headers={"Authorization": f"Bearer {KEY}"})  # what Prometheus sends
        assert answer.status_code == 200
        names = {f.name for f in text_string_to_metric_families(answer.text)}
        assert {"runplane_queue_depth", "runplane_run_attempts", "runplane_store_operations"} <= names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
