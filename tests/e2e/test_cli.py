"""`runplane dev` as a new user meets it: a subprocess in an empty directory, driven by the SDK."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client

RUNPLANE = [sys.executable, "-m", "runplane.cli"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUNPLANE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [*RUNPLANE, "dev", "--port", str(port)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("runplane dev did not start:\n" + (tmp_path / "dev.log").read_text())
            time.sleep(0.05)  # nothing to await on another process's socket
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_dev_serves_demo_graphs_on_embedded_sqlite(dev_server: tuple[str, Path]) -> None:
    url, cwd = dev_server
    client = get_sync_client(url=url)
    graphs = {a["graph_id"] for a in client.assistants.search()}
    assert {"echo", "chat", "slow", "hitl"} <= graphs
    thread = client.threads.create()
    hi: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    values = client.runs.wait(thread["thread_id"], "echo", input=hi)
    assert isinstance(values, dict) and values["messages"][-1]["content"] == "hi"
    assert (cwd / "runplane.db").is_file()
    banner = (cwd / "dev.log").read_text()
    assert url in banner and "get_sync_client" in banner

    # The inspection commands read the same server.
    listed = cli("threads", "ls", "--url", url, "--json", cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert thread["thread_id"] in {t["thread_id"] for t in json.loads(listed.stdout)}
    runs = cli("runs", "ls", thread["thread_id"], "--url", url, cwd=cwd)
    assert runs.returncode == 0 and "success" in runs.stdout


def test_a_busy_port_is_reported_as_such(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("dev", "--port", str(port), cwd=tmp_path)
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "busy" in result.stderr


def test_unknown_server_is_a_clear_error(tmp_path: Path) -> None:
    result = cli("threads", "ls", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode != 0 and "cannot reach" in result.stderr


def test_migrate_creates_the_database(tmp_path: Path) -> None:
    env = {**os.environ, "RUNPLANE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    result = cli("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x.db").is_file()
