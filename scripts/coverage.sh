#!/usr/bin/env bash
# Coverage: the core's branch coverage, measured over the test tiers that exercise it, with a gate.
#
#   ./scripts/coverage.sh [pytest args...]     report + gate; HTML in .cache/coverage/html
#
# What is measured (`source`), what is left out (`omit`) and the gate (`fail_under`, applied to the
# total and to branches alone) are in pyproject.toml's [tool.coverage.*] sections: tune them there. The core is pure (no I/O), so its
# own unit tier covers it; measuring it in a separate pass over that tier costs ~15 s, where tracing
# the whole suite would roughly double the CPU time of the in-process tiers.
# The single definition of the coverage gate: tests/test_code_quality.py, `make coverage` and CI
# (through ./scripts/test.sh) all run this script.
set -uo pipefail
# shellcheck source=scripts/_venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

# The tiers whose tests count towards the core's coverage.
COVERAGE_TIERS=(tests/unit)

mkdir -p .cache/coverage
export COVERAGE_FILE="$ROOT/.cache/coverage/.coverage"
check coverage "$PY" -m pytest "${COVERAGE_TIERS[@]}" -q -p no:cacheprovider \
    --cov --cov-branch --cov-report=term-missing:skip-covered \
    --cov-report=html:.cache/coverage/html "$@"
# coverage.py's total counts statements and branches together; the gate holds for branches alone too.
check branches "$PY" - <<'PY'
import json, subprocess, sys, tomllib

gate = tomllib.load(open("pyproject.toml", "rb"))["tool"]["coverage"]["report"]["fail_under"]
out = ".cache/coverage/coverage.json"
subprocess.run([sys.executable, "-m", "coverage", "json", "-q", "-o", out], check=False)
totals = json.load(open(out))["totals"]
branches = totals["percent_branches_covered"]
print(f"branches: {totals['covered_branches']}/{totals['num_branches']} = {branches:.2f}% (gate {gate}%)")
sys.exit(0 if branches >= gate else 1)
PY
finish
