#!/usr/bin/env bash
# Types: mypy over src/ (strict) and tests/ (every body checked); files, exclusions and strictness
# are in pyproject.toml's [tool.mypy]. The single definition of the type gate: tests/test_code_quality.py,
# `make types` and CI (through ./scripts/test.sh) all run this script.
set -uo pipefail
# shellcheck source=scripts/_venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

check mypy "$PY" -m mypy
finish
