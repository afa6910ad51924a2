#!/usr/bin/env bash
# Where a run's CPU goes, every process counted: the server, PostgreSQL, Redis and the client.
#
#   benchmarks/cpu_budget.sh                          SQLite and PostgreSQL + Redis, W2 (32 clients)
#   BUDGET_MODES="pg pg+redis" BUDGET_RUNS=1000 benchmarks/cpu_budget.sh
#   BENCH_SRC=/work/wt/before/src benchmarks/cpu_budget.sh      another checkout's runplane
#
# On a machine whose cores the server shares with its database and with the benchmark's client,
# throughput is bounded by the sum of those processes' CPU per run, not by the server's alone. For
# each mode this serves $BENCH_APP with `runplane serve --workers 256` on a fresh database
# (PostgreSQL durable, as `agentbench_stores.sh` runs it), warms up, then runs agentbench's W2 with
# the server's pid and reads, around it, the CPU of the server, of every PostgreSQL process and of
# Redis (from /proc); the client's is agentbench's own. It prints CPU per run by process, their sum,
# and the throughput that sum allows on this machine's cores beside the one measured.
# Not a test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

BENCH_DIR="${BENCH_DIR:-/work/shared/bench}"
BENCH_APP="${BENCH_APP:-$BENCH_DIR/reference/app}"
MODES="${BUDGET_MODES:-sqlite pg+redis}"
RUNS="${BUDGET_RUNS:-600}"
PY="$ROOT/.venv/bin/python"
OUT="$(mktemp -d /tmp/runplane-budget.XXXXXX)"
SERVER_PID=""

trap rp_bench_cleanup EXIT
trap 'exit 130' INT TERM

case " $MODES " in
    *" pg"*)
        rp_services_init
        rp_start_postgres
        case " $MODES " in *" pg+redis "*) rp_ensure_redis_server; rp_start_redis ;; esac
        rp_restart_postgres_durable "$OUT/pg_restart.log"
        ;;
esac

ticks() {  # ticks PID...: CPU clock ticks (user + system) of the processes still alive
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

postgres_pids() {  # the postmaster of this run's cluster and its children (backends, WAL writer...)
    local postmaster
    postmaster="$(head -1 "$RP_DIR/pg/data/postmaster.pid")"
    echo "$postmaster" $(pgrep -P "$postmaster" || true)
}

for mode in $MODES; do
    redis=""
    if [ "$mode" = sqlite ]; then
        url="sqlite:///$OUT/budget.db"
    else
        "$PY" -c "import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute('CREATE DATABASE budget_' + sys.argv[2])" \
            "$RP_PG_URL" "${mode//+/_}"
        url="${RP_PG_URL%/postgres}/budget_${mode//+/_}"
        [ "$mode" = pg+redis ] && redis="$RP_REDIS_URL"
    fi
    rp_bench_serve "$OUT/$mode.serve.log" "${BENCH_SRC:-}" "$url" "$redis"
    "$PY" "$BENCH_DIR/agentbench.py" --url "$BENCH_URL" --only W2 --w2-n 200 --no-warmup \
        >"$OUT/$mode.warmup.out" 2>&1 || rp_die "agentbench failed: $OUT/$mode.warmup.out"

    pg=(); redis_pids=()
    [ "$mode" != sqlite ] && read -r -a pg <<<"$(postgres_pids)"
    [ "$mode" = pg+redis ] && redis_pids=("$(cat "$RP_DIR/redis/redis.pid")")
    before=("$(ticks "${pg[@]}")" "$(ticks "${redis_pids[@]}")")
    "$PY" "$BENCH_DIR/agentbench.py" --url "$BENCH_URL" --only W2 --w2-n "$RUNS" --no-warmup \
        --pid "$SERVER_PID" --json "$OUT/$mode.json" >"$OUT/$mode.out" 2>&1 \
        || rp_die "agentbench failed: $OUT/$mode.out"
    [ "$mode" != sqlite ] && read -r -a pg <<<"$(postgres_pids)"  # backends opened meanwhile count too
    echo "$mode $(( $(ticks "${pg[@]}") - before[0] )) $(( $(ticks "${redis_pids[@]}") - before[1] ))" >>"$OUT/ticks"
    rp_bench_stop_server
done

"$PY" - "$OUT" "$(getconf CLK_TCK)" "$(nproc)" <<'PY'
import json
import sys

out, tick, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"CPU per run at W2, every process counted ({cores} cores); results in {out}")
print("| mode | server ms | PostgreSQL ms | Redis ms | client ms | sum ms | runs/s the sum allows | runs/s measured |")
print("|---|---|---|---|---|---|---|---|")
for line in open(f"{out}/ticks"):
    mode, pg_ticks, redis_ticks = line.split()
    w2 = json.load(open(f"{out}/{mode}.json"))["results"]["W2"]
    n = w2["metrics"]["n"]
    server, client = 1000 * w2["server_cpu_s"] / n, 1000 * w2["client_cpu_s"] / n
    pg, redis = 1000 * int(pg_ticks) / tick / n, 1000 * int(redis_ticks) / tick / n
    total = server + pg + redis + client
    print(
        f"| {mode} | {server:.2f} | {pg:.2f} | {redis:.2f} | {client:.2f} | {total:.2f} "
        f"| {1000 * cores / total:.0f} | {w2['metrics']['runs_per_s']:.0f} |"
    )
PY
