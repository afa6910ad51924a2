"""The example application as real processes: what happens to runs when the host process dies
(kill -9), and a `runplane worker` process sharing the application's database."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from examples.embedded_app.app import create_app

from tests.e2e._procs import Proc, free_port, wait_until
from tests.embedding._support import ALICE, EXAMPLE, ROOT, serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def app_process(tmp_path: Path, database_url: str, port: int) -> Proc:
    argv = [sys.executable, "-m", "uvicorn", "--factory", "examples.embedded_app.app:app_from_env"]
    env = {
        **os.environ,
        "EXAMPLE_DATABASE_URL": database_url,
        "EXAMPLE_LEASE_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
    }
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return Proc("app", "api", argv, env, tmp_path, port=port)


def answering(url: str) -> bool:
    """True once the app serves requests (uvicorn accepts them only after the lifespan opened runplane)."""
    try:
        return httpx.get(f"{url}/api/threads/x/runs", headers=ALICE, timeout=1).status_code == 404
    except httpx.HTTPError:
        return False


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def test_a_run_of_a_host_process_killed_mid_run_is_resumed_by_the_restarted_app(
    tmp_path: Path, processes: list[Proc]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    gate = tmp_path / "gate"
    app = app_process(tmp_path, database_url, free_port())
    processes.append(app)
    app.start()
    wait_until(lambda: answering(app.url), 60, "the app to start")
    with httpx.Client(base_url=app.url, headers=ALICE, timeout=60) as client:
        thread_id = client.post("/api/threads").json()["thread_id"]
        run = client.post(
            f"/api/threads/{thread_id}/messages", json={"text": "survive", "gate": str(gate)}
        ).json()
        run_path = f"/api/threads/{thread_id}/runs/{run['run_id']}"
        wait_until(lambda: client.get(run_path).json()["status"] == "running", 30, "the run to start")
        app.kill()  # kill -9: no shutdown, no hand-back; the run's lease simply stops being renewed
        gate.touch()
        app.start()  # the same app, restarted on the same database
        wait_until(lambda: answering(app.url), 60, "the app to restart")
        # Once the dead process's lease expires (2 s here, 30 s by default) the run is resumed.
        assert client.get(f"{run_path}/join").json()["status"] == "success"
        messages = client.get(f"/api/threads/{thread_id}/messages").json()["messages"]
        assert messages == ["survive", "echo: survive"]


async def test_a_runplane_worker_process_executes_the_apps_runs_on_its_database(
    tmp_path: Path, processes: list[Proc]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    argv = [
        sys.executable, "-m", "runplane.cli", "worker",
        "--database-url", database_url, "--config", str(EXAMPLE / "langgraph.json"), "--workers", "2",
    ]  # fmt: skip
    worker = Proc("worker", "worker", argv, dict(os.environ), tmp_path)
    processes.append(worker)
    worker.start()
    wait_until(worker.ready, 60, "runplane worker to start")
    async with serve(create_app(database_url, workers=0)) as client:  # this app executes nothing
        thread_id = (await client.post("/api/threads", headers=ALICE)).json()["thread_id"]
        sent = await client.post(f"/api/threads/{thread_id}/messages", json={"text": "hi"}, headers=ALICE)
        run_id = sent.json()["run_id"]
        joined = await client.get(f"/api/threads/{thread_id}/runs/{run_id}/join", headers=ALICE)
        assert joined.json()["status"] == "success"
        messages = (await client.get(f"/api/threads/{thread_id}/messages", headers=ALICE)).json()
        assert messages == {"messages": ["hi", "echo: hi"]}
    assert worker.alive()
