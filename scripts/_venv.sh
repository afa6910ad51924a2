# shellcheck shell=bash
# Shared by scripts/lint.sh, types.sh, coverage.sh and bench.sh: run from the repository root with
# the project's .venv (made by ./scripts/test.sh, which installs `.[dev,postgres,redis]`).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# RUNPLANE_PYTHON: another interpreter (tests/test_code_quality.py passes the one running pytest).
PY="${RUNPLANE_PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
    echo "no $PY: run ./scripts/test.sh --co -q once to create .venv" >&2
    exit 2
fi
BIN="$(dirname "$PY")"
# Each check runs to the end and reports; the script fails if any failed.
failed=()
check() {
    local name="$1"
    shift
    echo "--- $name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}
finish() {
    if [ "${#failed[@]}" -gt 0 ]; then
        echo "FAILED: ${failed[*]}" >&2
        exit 1
    fi
    echo "ok"
}
