"""The code's own gates, so CI refuses what a reviewer would: lint (ruff, its formatter and the
architecture's import contracts), types (mypy, strict on src/, every body checked in tests/) and the
core's branch coverage. Each gate is defined once, as a script in scripts/ (`make lint|types|coverage`
runs the same), and run here with this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GATES = {
    "lint": ROOT / "scripts" / "lint.sh",
    "types": ROOT / "scripts" / "types.sh",
    "coverage": ROOT / "scripts" / "coverage.sh",
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("gate", sorted(GATES))
def test_gate_passes(gate: str) -> None:
    env = {**os.environ, "RUNPLANE_PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(GATES[gate])], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{gate} failed:\n{result.stdout}\n{result.stderr}"
