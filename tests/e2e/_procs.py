"""Real `runplane serve` / `runplane worker` subprocesses for the multi-process tests and benchmarks.

A `Cluster` starts API and worker processes on one PostgreSQL database (state and queue) and one
Redis (fan-out), with the graphs of `scaleout_app/`, on free loopback ports. Each process writes its
output to its own log file (one per start, so a restarted process keeps the old log); the graphs
append their step log to `Cluster.step_log`. Processes are stopped by their pid only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import httpx

RUNPLANE = [sys.executable, "-m", "runplane.cli"]
APP_CONFIG = Path(__file__).with_name("scaleout_app") / "langgraph.json"
LOG_ENV = "RUNPLANE_TEST_LOG"
#: Printed by `runplane worker` once its workers listen for runs.
WORKER_READY = "runplane worker: <Worker"

Kind = Literal["api", "worker"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll another process's side effect: there is nothing to await across processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One runplane process, restartable (each start gets a new log file)."""

    name: str
    kind: Kind
    argv: list[str]
    env: dict[str, str]
    directory: Path
    port: int | None = None
    popen: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    #: Every pid this process has had, oldest first.
    pids: list[int] = field(default_factory=list)
    #: `time.monotonic()` of the last start.
    started_at: float = 0.0

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def log(self) -> Path:
        return self.logs[-1]

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        assert not self.alive(), f"{self.name} is already running"
        path = self.directory / f"{self.name}.{len(self.logs)}.log"
        self.logs.append(path)
        with path.open("wb") as out:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=self.directory, stdout=out, stderr=subprocess.STDOUT
            )
        self.pids.append(self.popen.pid)
        self.started_at = time.monotonic()

    def ready(self) -> bool:
        """True once the API answers /ok, or the worker announced that it listens for runs."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited ({self.returncode()}):\n{self.tail()}")
        if self.kind == "worker":
            return WORKER_READY in self.log.read_text(errors="replace")
        try:
            return httpx.get(f"{self.url}/ok", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_until(self.ready, timeout, f"{self.name} to start", interval=0.05)

    def send(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.alive():
            self.send(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_text(self) -> str:
        """Everything every start of this process wrote."""
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Cluster:
    """API and worker processes sharing `database_url` (and `redis_url`, unless None).

    Args:
        directory: where logs (and the step log) go; also each process's working directory.
        database_url: a PostgreSQL database, already created.
        redis_url: the Redis the processes fan out through; None leaves `--redis-url` out.
        env: extra environment (e.g. `RUNPLANE_LEASE_SECONDS`) for every process.
    """

    def __init__(
        self,
        directory: Path,
        database_url: str,
        redis_url: str | None,
        *,
        env: Mapping[str, str] | None = None,
        config: Path = APP_CONFIG,
    ) -> None:
        self.directory = directory
        self.database_url = database_url
        self.redis_url = redis_url
        self.config = config
        self.step_log = directory / "steps.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")},
            "PYTHONUNBUFFERED": "1",
            LOG_ENV: str(self.step_log),
            **(env or {}),
        }
        self.procs: list[Proc] = []

    def _common(self) -> list[str]:
        args = ["--database-url", self.database_url, "--config", str(self.config)]
        if self.redis_url is not None:
            args += ["--redis-url", self.redis_url]
        return args

    def add_api(self, name: str, *, port: int | None = None, env: Mapping[str, str] | None = None) -> Proc:
        """An API-only process (`runplane serve --workers 0`), not started yet."""
        port = port or free_port()
        argv = [*RUNPLANE, "serve", *self._common(), "--workers", "0", "--port", str(port)]
        proc = Proc(name, "api", argv, {**self.env, **(env or {})}, self.directory, port=port)
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str, *, concurrency: int = 4, env: Mapping[str, str] | None = None) -> Proc:
        """A worker-only process (`runplane worker --workers N`), not started yet."""
        argv = [*RUNPLANE, "worker", *self._common(), "--workers", str(concurrency)]
        proc = Proc(name, "worker", argv, {**self.env, **(env or {})}, self.directory)
        self.procs.append(proc)
        return proc

    @property
    def apis(self) -> list[Proc]:
        return [p for p in self.procs if p.kind == "api"]

    @property
    def workers(self) -> list[Proc]:
        return [p for p in self.procs if p.kind == "worker"]

    def start(self, procs: Iterable[Proc] | None = None, timeout: float = 60.0) -> None:
        """Start processes together (they import and migrate in parallel), then wait for all."""
        chosen = list(self.procs if procs is None else procs)
        for proc in chosen:
            if not proc.alive():
                proc.start()
        for proc in chosen:
            proc.wait_ready(timeout)

    def restart(self, proc: Proc, *, wait: bool = True) -> None:
        proc.kill()
        proc.start()
        if wait:
            proc.wait_ready()

    def by_pid(self, pid: int) -> Proc:
        for proc in self.procs:
            if proc.alive() and proc.pid == pid:
                return proc
        raise LookupError(f"no live process with pid {pid}")

    def close(self) -> None:
        """SIGTERM everything still running (SIGKILL what does not exit within a few seconds)."""
        for proc in self.procs:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.send(signal.SIGCONT)
                    proc.send(signal.SIGTERM)
        for proc in self.procs:
            if proc.popen is not None:
                try:
                    proc.popen.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        return "\n".join(f"===== {p.name} =====\n{p.log_text()[-6000:]}" for p in self.procs)

    @contextlib.contextmanager
    def running(self) -> Iterator[Cluster]:
        try:
            self.start()
            yield self
        finally:
            self.close()


# -- the step log -------------------------------------------------------------------------------------


class Line(NamedTuple):
    """One line of the step log written by `scaleout_app/graphs.py`."""

    run_id: str
    thread_id: str
    step: str
    phase: str
    attempt: int
    t: float
    pid: int


def read_steps(path: Path, run_id: str | None = None) -> list[Line]:
    """The step log (only `run_id`'s lines when given), in file order."""
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) != 7:
            continue  # a torn last line is impossible with O_APPEND writes, but never trust it
        line = Line(parts[0], parts[1], parts[2], parts[3], int(parts[4]), float(parts[5]), int(parts[6]))
        if run_id is None or line.run_id == run_id:
            lines.append(line)
    return lines


def pid_of(worker_id: str | None) -> int | None:
    """The pid in a worker id (`host:pid:random`, the runs' `lease_owner`)."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
