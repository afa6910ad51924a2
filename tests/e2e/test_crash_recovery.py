"""A worker process killed with SIGKILL mid-run: another process recovers the run and resumes it
from its last checkpoint (steps already done are not run again)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runplane.stores.sqlite.store import SqliteStore

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("crash_worker.py")
ROOT = Path(__file__).parents[2]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll another process's side effect (a file, a row): there is no event to await across processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the other process")
        time.sleep(0.01)


def log_lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def step1_checkpointed(db: Path, thread_id: str) -> bool:
    """True once the checkpoint written after step 1 is committed (async durability writes it
    while step 2 already runs)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
            "AND json_extract(CAST(metadata AS TEXT), '$.step') = 1",
            (thread_id,),
        ).fetchall()
    return bool(rows)


def start(db: Path, log: Path, what: str, *, block: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "CRASH_BLOCK": "1" if block else "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(db), str(log), what],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


async def test_killed_worker_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    db, log = tmp_path / "runplane.db", tmp_path / "steps.log"
    first = start(db, log, "create", block=True)
    try:
        assert first.stdout is not None
        ids = json.loads(first.stdout.readline())
        wait_for(lambda: "step2" in log_lines(log))
        wait_for(lambda: step1_checkpointed(db, ids["thread_id"]))
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert log_lines(log) == ["step1", "step2"]

    second = start(db, log, ids["run_id"], block=False)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"status": "success"}

    lines = log_lines(log)
    assert lines.count("step1") == 1  # done before the crash, never redone
    assert lines == ["step1", "step2", "step2", "step3"]  # the interrupted step runs again
    async with SqliteStore(str(db)) as store:
        run = await store.get_run(ids["run_id"], "")
        thread = await store.get_thread(ids["thread_id"], "")
    assert run.status == "success" and run.attempt == 2
    # Resumed, not restarted: the input was sent once.
    assert thread.values == {"log": ["input", "step1", "step2", "step3"]}
    assert thread.status == "idle"
