#!/usr/bin/env bash
# agentbench on every store side by side: SQLite, PostgreSQL, PostgreSQL + Redis (issue 18).
#
#   benchmarks/agentbench_stores.sh                   all modes, agentbench's default scale
#   benchmarks/agentbench_stores.sh --quick           small scale (smoke)
#   benchmarks/agentbench_stores.sh --only W1,W2      any other agentbench flags are passed on
#   BENCH_MODES="pg pg+redis" benchmarks/agentbench_stores.sh
#   BENCH_SRC=/tmp/main/src benchmarks/agentbench_stores.sh   measure another checkout's runplane
#   BENCH_COMPARE=/work/wt/before/src benchmarks/agentbench_stores.sh --only W3
#                                                    each mode twice, that checkout first ("before")
#                                                    then this one, in one session, with ratios
#   BENCH_PROFILE=1 benchmarks/agentbench_stores.sh --only W3   also record each server with py-spy
#                                                    (collapsed stacks + SVG per mode, in the kept dir)
#
# Starts a throwaway PostgreSQL 15 (fsync and synchronous_commit ON, as a user runs it: the test
# services turn them off) and Redis (scripts/_services_lib.sh), then for each mode serves
# $BENCH_APP with `runplane serve --workers 256` on a fresh database, runs $BENCH_DIR/agentbench.py
# against it with the server's pid (CPU, RSS), and prints summarize.py's table, one column per mode,
# then the issue's table (benchmarks/stores_table.py) with each mode beside SQLite (or beside its
# "before" run).
# Not a test. The machine is shared: quote ratios from one session, not absolute figures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

BENCH_DIR="${BENCH_DIR:-/work/shared/bench}"
BENCH_APP="${BENCH_APP:-$BENCH_DIR/reference/app}"
BENCH_MODES="${BENCH_MODES:-sqlite pg pg+redis}"
BENCH_WORKERS="${BENCH_WORKERS:-256}"
PY="$ROOT/.venv/bin/python"
OUT="$(mktemp -d /tmp/runplane-agentbench.XXXXXX)"
SERVER_PID=""

trap rp_bench_cleanup EXIT
trap 'exit 130' INT TERM

rp_ensure_redis_server
rp_services_init
rp_start_postgres
rp_start_redis
rp_restart_postgres_durable "$OUT/pg_restart.log"
"$PY" -c "import sys, psycopg; print('[runplane-services] PostgreSQL fsync =', psycopg.connect(sys.argv[1]).execute('SHOW fsync').fetchone()[0])" "$RP_PG_URL" >&2

new_database() {
    "$PY" -c "import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute('CREATE DATABASE ' + sys.argv[2])" \
        "$RP_PG_URL" "$1"
    printf '%s\n' "${RP_PG_URL%/postgres}/$1"
}

serve() {  # serve SRC DATABASE_URL [REDIS_URL]: runplane from SRC (empty: this one); sets SERVER_PID and URL
    rp_bench_serve "$OUT/serve.log" "$@"
    URL="$BENCH_URL"
}

results=()
run_mode() {  # run_mode MODE SRC LABEL [agentbench args]
    local mode="$1" src="$2" label="$3"
    shift 3
    case "$mode" in
        sqlite) serve "$src" "sqlite:///$OUT/bench-$label.db" ;;
        pg) serve "$src" "$(new_database "bench_pg_$RANDOM$RANDOM")" ;;
        pg+redis)
            "$PY" -c "import sys, redis; redis.Redis.from_url(sys.argv[1]).flushdb()" "$RP_REDIS_URL"
            serve "$src" "$(new_database "bench_pg_redis_$RANDOM$RANDOM")" "$RP_REDIS_URL"
            ;;
        *) rp_die "unknown mode $mode (sqlite, pg, pg+redis)" ;;
    esac
    rp_log "$label: agentbench against $URL (pid $SERVER_PID)"
    local file="$OUT/${label// /_}"
    profiler=""
    if [ -n "${BENCH_PROFILE:-}" ]; then
        # Raw collapsed stacks (grep-able), or an SVG flame graph with BENCH_PROFILE=svg.
        format=raw; [ "$BENCH_PROFILE" = svg ] && format=flamegraph
        "$ROOT/.venv/bin/py-spy" record --pid "$SERVER_PID" --rate 200 --format "$format" \
            -o "$file.$format" >"$file.py-spy.log" 2>&1 &
        profiler=$!
    fi
    "$PY" "$BENCH_DIR/agentbench.py" --url "$URL" --pid "$SERVER_PID" --label "runplane $label" \
        --json "$file.json" "$@" >"$file.out" 2>&1 || { cat "$file.out" >&2; rp_die "agentbench failed on $label"; }
    if [ -n "$profiler" ]; then kill -INT "$profiler" 2>/dev/null || true; wait "$profiler" 2>/dev/null || true; fi
    rp_bench_stop_server
    results+=("$file.json")
}

for mode in $BENCH_MODES; do
    if [ -n "${BENCH_COMPARE:-}" ]; then
        run_mode "$mode" "$BENCH_COMPARE" "$mode before" "$@"
    fi
    run_mode "$mode" "${BENCH_SRC:-}" "$mode" "$@"
done

"$PY" "$BENCH_DIR/summarize.py" "${results[@]}"
echo
"$PY" "$ROOT/benchmarks/stores_table.py" "${results[@]}"
rp_log "results kept in $OUT"
