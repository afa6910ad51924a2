#!/usr/bin/env bash
# Lint: ruff, ruff's formatter (check only; `make format` rewrites), and the architecture's import
# contracts (`[tool.importlinter]` in pyproject.toml). The single definition of the lint gate:
# tests/test_code_quality.py, `make lint` and CI (through ./scripts/test.sh) all run this script.
set -uo pipefail
# shellcheck source=scripts/_venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

check ruff "$PY" -m ruff check src tests benchmarks examples
check format "$PY" -m ruff format --check src tests benchmarks examples
check imports "$BIN/lint-imports"
finish
