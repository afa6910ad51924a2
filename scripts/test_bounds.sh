#!/usr/bin/env bash
# Test runplane at the lowest LangGraph versions pyproject.toml allows:
#   ./scripts/test_bounds.sh [pytest args...]
#
# - builds .cache/bounds-venv with `pip install --constraint constraints/lowest.txt` (cached: rebuilt
#   only when pyproject.toml or constraints/lowest.txt change)
# - runs the saver contract tests and a smoke of runs through the worker in it (or the given
#   pytest args)
#
# The upper end is the main .venv (pip picks the newest versions pyproject.toml allows), which
# scripts/test.sh tests; it calls this script after a whole-suite run (RUNPLANE_SKIP_BOUNDS=1: off).
# PostgreSQL tests need RUNPLANE_TEST_POSTGRES_URL (scripts/test.sh exports it); skipped otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

VENV="$ROOT/.cache/bounds-venv"
CONSTRAINTS="$ROOT/constraints/lowest.txt"
INSTALL_SPEC='.[postgres,redis]'
TEST_TOOLS=("pytest>=8.3" "pytest-asyncio>=0.25" "pytest-timeout>=2.3" "hypothesis>=6.100")

#: The saver adapters' contract, a run's final read answered as each saver answers it, then runs
#: through the worker: lifecycle, cancel and rollback, crash resume, the checkpoint fence and TTL
#: sweep, thread state, graph loading.
SMOKE=(
    tests/conformance/test_saver_adapters.py
    tests/integration/test_final_read_from_own_puts.py
    tests/integration/test_worker_lifecycle.py
    tests/integration/test_worker_cancel.py
    tests/integration/test_worker_faults.py
    tests/integration/test_checkpoint_fence.py
    tests/integration/test_checkpoint_ttl.py
    tests/integration/test_worker_thread_state.py
    tests/unit/test_graphs_loading.py
    -q
)

want_hash="$( { cat pyproject.toml "$CONSTRAINTS"; printf '%s\n' "$INSTALL_SPEC" "${TEST_TOOLS[@]}"; } | sha256sum | cut -d' ' -f1)"
have_hash="$(cat "$VENV/.installed-hash" 2>/dev/null || true)"
if [ ! -x "$VENV/bin/python" ] || [ "$want_hash" != "$have_hash" ]; then
    rp_log "building .cache/bounds-venv at the lowest LangGraph versions (constraints/lowest.txt)"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --constraint "$CONSTRAINTS" -e "$INSTALL_SPEC" "${TEST_TOOLS[@]}"
    printf '%s\n' "$want_hash" >"$VENV/.installed-hash"
fi

# pip resolved within the constraints or failed above; say what ran.
rp_log "lowest versions: $("$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
    | awk '/^langgraph/ {printf "%s %s  ", $1, $2}')"

if [ "$#" -eq 0 ]; then
    set -- "${SMOKE[@]}"
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
