"""CI smoke run of `benchmarks/overhead.py` (issue 14): at the tiniest scale it completes and prints
its table. It asserts nothing about speed: the machine is shared, and speed is the benchmark's job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path("/work/shared/bench")

pytestmark = pytest.mark.skipif(
    not (BENCH / "agentbench.py").exists() or not (BENCH / "bare_limit.py").exists(),
    reason="the shared agentbench harness is not on this machine",
)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_overhead_benchmark_completes_and_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--scale", "tiny"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    assert any(
        line.startswith(
            "| | bare floor (SQLite saver) | null server (client floor) | runplane sqlite | runplane memory |"
        )
        for line in lines
    )
    for label in ("W1 create+wait p50", "W2 32 clients", "server CPU per run", "W3 custom events", "W6 "):
        assert any(line.startswith(f"| {label}") for line in lines), label
    errors = next(line for line in lines if line.startswith("| errors"))
    assert errors.split("|")[3:6] == [" 0 ", " 0 ", " 0 "], errors
