"""The code's own gates, so CI refuses what a reviewer would: lint, format, strict types, and the
architecture's import contracts (`[tool.importlinter]` in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

GATES = {
    "ruff": [sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples"],
    "format": [sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "benchmarks", "examples"],
    "mypy": [sys.executable, "-m", "mypy"],  # files and strictness from pyproject.toml
    "imports": [str(BIN / "lint-imports")],
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("gate", sorted(GATES))
def test_gate_passes(gate: str) -> None:
    result = subprocess.run(GATES[gate], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{gate} failed:\n{result.stdout}\n{result.stderr}"
