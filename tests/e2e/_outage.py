"""A PostgreSQL and a Redis of the test's own, to stop and start at will (outage tests), and a small
tmpfs to fill (disk full). Nothing here touches the servers `scripts/test.sh` started for the suite.

PostgreSQL runs as the `postgres` OS user when the tests run as root (initdb refuses root), in a
directory it can reach; every process is stopped by its pid or data directory, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.e2e._procs import free_port, wait_until

PG_VERSION = "15"


def _pg_bin(name: str) -> str | None:
    for candidate in (f"/usr/lib/postgresql/{PG_VERSION}/bin/{name}", shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class OwnPostgres:
    """A throwaway PostgreSQL on a fixed loopback port, stoppable (`pg_ctl stop -m fast`) and
    restartable on the same port."""

    def __init__(self) -> None:
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found")
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            raise RuntimeError("running as root without runuser")
        self.root = Path(tempfile.mkdtemp(prefix="runplane-outage-pg."))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            _as_pg_user([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True,
            capture_output=True,
            cwd="/",
        )
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='{self.root}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            _as_pg_user(
                [str(self.pg_ctl), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"]
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: every session is terminated (AdminShutdown), then the server exits."""
        subprocess.run(
            _as_pg_user([str(self.pg_ctl), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            check=True,
            capture_output=True,
            cwd="/",
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """A throwaway redis-server on a fixed loopback port; `kill()` is SIGKILL (no goodbye)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="runplane-outage-redis."))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.root)]
        with (self.root / "redis.log").open("ab") as log:
            self.popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: _accepts(self.port), 10, "redis-server to listen")

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def small_tmpfs(size: str = "12m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on a new directory, unmounted and removed afterwards.

    Raises:
        PermissionError: mounting is not allowed here (not root, or a sandbox).
    """
    where = Path(tempfile.mkdtemp(prefix="runplane-tmpfs."))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        where.rmdir()
        raise PermissionError(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield where
    finally:
        for attempt in range(50):
            if subprocess.run(["umount", str(where)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1 * (attempt + 1))  # a process we stopped may still hold a file for a moment
        else:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(directory: Path) -> Path:
    """Write a file in `directory` until its filesystem is full; returns the file (delete it to
    free the space)."""
    path = directory / "filler"
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:  # the last few bytes
                out.write(b"\0" * 512)
    return path
