#!/usr/bin/env bash
# Run the whole test suite: ./scripts/test.sh [pytest args...]
#
# - creates/updates .venv (skipped when pyproject.toml is unchanged since the
#   last install, or when RUNPLANE_SKIP_INSTALL=1)
# - starts a throwaway PostgreSQL 15 and Redis on free 127.0.0.1 ports, unless
#   RUNPLANE_TEST_POSTGRES_URL / RUNPLANE_TEST_REDIS_URL are already set
# - runs pytest, stops the servers, and exits with pytest's exit code
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

VENV="$ROOT/.venv"
INSTALL_SPEC='.[dev,postgres,redis]'

# --- virtualenv + project install -------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    rp_log "creating virtualenv in .venv"
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        rp_log "python3 -m venv failed; trying to install python3-venv"
        rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq python3-venv >/dev/null \
            || rp_die "python3 -m venv failed; install python3-venv"
        python3 -m venv "$VENV"
    fi
fi

if [ "${RUNPLANE_SKIP_INSTALL:-0}" != "1" ]; then
    [ -f pyproject.toml ] || rp_die "pyproject.toml not found in $ROOT"
    want_hash="$( { cat pyproject.toml; printf '%s\n' "$INSTALL_SPEC"; } | sha256sum | cut -d' ' -f1)"
    have_hash="$(cat "$VENV/.installed-hash" 2>/dev/null || true)"
    if [ "$want_hash" != "$have_hash" ]; then
        rp_log "installing project into .venv (pip install -e \"$INSTALL_SPEC\")"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$INSTALL_SPEC"
        printf '%s\n' "$want_hash" >"$VENV/.installed-hash"
    fi
fi

# --- services ----------------------------------------------------------------
need_pg=0
need_redis=0
[ -n "${RUNPLANE_TEST_POSTGRES_URL:-}" ] || need_pg=1
[ -n "${RUNPLANE_TEST_REDIS_URL:-}" ] || need_redis=1

RP_DIR=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$RP_DIR" ]; then
        rp_services_stop "$RP_DIR" || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ "$need_redis" = 1 ]; then
    rp_ensure_redis_server
fi
rp_ensure_chromium
if [ "$need_pg" = 1 ] || [ "$need_redis" = 1 ]; then
    rp_services_init
    if [ "$need_pg" = 1 ]; then
        rp_start_postgres
        export RUNPLANE_TEST_POSTGRES_URL="$RP_PG_URL"
    fi
    if [ "$need_redis" = 1 ]; then
        rp_start_redis
        export RUNPLANE_TEST_REDIS_URL="$RP_REDIS_URL"
    fi
fi
rp_log "RUNPLANE_TEST_POSTGRES_URL=$RUNPLANE_TEST_POSTGRES_URL"
rp_log "RUNPLANE_TEST_REDIS_URL=$RUNPLANE_TEST_REDIS_URL"

# --- the JS SDK (tests/e2e/test_resources_js.py) ------------------------------
# Installed with npm, like the Python packages with pip; where node or npm is missing, or the install
# fails, the JS test skips and says why.
if [ -z "${RUNPLANE_TEST_JS_SDK:-}" ] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    JS_DIR="$ROOT/.cache/js-sdk"
    if ! cmp -s "$ROOT/tests/e2e/js/package.json" "$JS_DIR/package.json" \
        || [ ! -d "$JS_DIR/node_modules/@langchain/langgraph-sdk" ]; then
        mkdir -p "$JS_DIR"
        cp "$ROOT/tests/e2e/js/package.json" "$JS_DIR/package.json"
        rp_log "installing the JS SDK into .cache/js-sdk (npm)"
        (cd "$JS_DIR" && npm install --no-audit --no-fund --loglevel=error >/dev/null 2>&1) \
            || rp_log "npm install of the JS SDK failed: its test will skip"
    fi
    if [ -d "$JS_DIR/node_modules/@langchain/langgraph-sdk" ]; then
        export RUNPLANE_TEST_JS_SDK="$JS_DIR"
    fi
fi

# --- tests -------------------------------------------------------------------
set +e
"$VENV/bin/python" -m pytest "$@"
rc=$?
set -e

# --- the lowest LangGraph versions allowed (scripts/test_bounds.sh) -----------
# After a whole-suite run (no pytest args, as .ci/run) that passed; RUNPLANE_SKIP_BOUNDS=1 skips it.
if [ "$rc" = 0 ] && [ "$#" -eq 0 ] && [ "${RUNPLANE_SKIP_BOUNDS:-0}" != "1" ]; then
    "$ROOT/scripts/test_bounds.sh" || rc=$?
fi
exit "$rc"
