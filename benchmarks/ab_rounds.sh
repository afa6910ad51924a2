#!/usr/bin/env bash
# Two checkouts of runplane against each other, interleaved: before, after, before, after, ...
#
#   BENCH_COMPARE=/path/to/other/src benchmarks/ab_rounds.sh                 PostgreSQL + Redis, 3 rounds
#   BENCH_COMPARE=... AB_MODE=sqlite AB_ROUNDS=5 benchmarks/ab_rounds.sh     SQLite, 5 rounds
#   AB_MODE=pg AB_ONLY=W1,W2 benchmarks/ab_rounds.sh                         PostgreSQL alone, two workloads
#
# `agentbench_stores.sh` measures each side once, one after the other; on a shared machine a
# burst of someone else's load then lands on one side only, and one run's ratio can be off by 20 to
# 30%. Here each round serves "before" (`BENCH_COMPARE`) and then "after" (this checkout) on a
# fresh database, runs `agentbench.py` (W1, W2 and W6 by default) against each with the server's
# pid, and the table gives each figure's median over the rounds, the ratio of the medians and
# every round's own ratio, so that a ratio that flips between rounds shows as noise.
# PostgreSQL runs durable (fsync and synchronous_commit on), as `agentbench_stores.sh` runs it.
# Not a test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

BENCH_DIR="${BENCH_DIR:-/work/shared/bench}"
BENCH_APP="${BENCH_APP:-$BENCH_DIR/reference/app}"
BEFORE="${BENCH_COMPARE:?BENCH_COMPARE: the src directory of the checkout to compare against}"
MODE="${AB_MODE:-pg+redis}"
ROUNDS="${AB_ROUNDS:-3}"
ONLY="${AB_ONLY:-W1,W2,W6}"
PY="$ROOT/.venv/bin/python"
OUT="$(mktemp -d /tmp/runplane-ab.XXXXXX)"
SERVER_PID=""

trap rp_bench_cleanup EXIT
trap 'exit 130' INT TERM

case "$MODE" in
    sqlite | pg | pg+redis) ;;
    *) rp_die "AB_MODE is sqlite, pg or pg+redis, not $MODE" ;;
esac
if [ "$MODE" != sqlite ]; then
    rp_services_init
    rp_start_postgres
    if [ "$MODE" = pg+redis ]; then rp_ensure_redis_server; rp_start_redis; fi
    rp_restart_postgres_durable "$OUT/pg_restart.log"
fi

database_url() {  # database_url NAME: a fresh database (or SQLite file) for one side of one round
    if [ "$MODE" = sqlite ]; then
        printf 'sqlite:///%s/%s.db\n' "$OUT" "$1"
        return
    fi
    "$PY" -c "import sys, psycopg; psycopg.connect(sys.argv[1], autocommit=True).execute('CREATE DATABASE ' + sys.argv[2])" \
        "$RP_PG_URL" "$1"
    printf '%s\n' "${RP_PG_URL%/postgres}/$1"
}

run_side() {  # run_side LABEL ROUND SRC (empty: this checkout)
    local label="$1" round="$2" src="$3" url redis=""
    url="$(database_url "${label}_$round")"
    [ "$MODE" = pg+redis ] && redis="$RP_REDIS_URL"
    rp_bench_serve "$OUT/$label.$round.serve.log" "$src" "$url" "$redis"
    "$PY" "$BENCH_DIR/agentbench.py" --url "$BENCH_URL" --only "$ONLY" --w1-n 200 --w2-n 500 \
        --pid "$SERVER_PID" --json "$OUT/$label.$round.json" >"$OUT/$label.$round.out" 2>&1 \
        || rp_die "agentbench failed: $OUT/$label.$round.out"
    rp_bench_stop_server
}

for round in $(seq 1 "$ROUNDS"); do
    run_side before "$round" "$BEFORE"
    run_side after "$round" ""
    echo "[ab] round $round of $ROUNDS done" >&2
done

"$PY" - "$OUT" "$MODE" <<'PY'
import glob
import json
import statistics
import sys

out, mode = sys.argv[1], sys.argv[2]


def figures(path: str) -> dict[str, float]:
    results = json.load(open(path))["results"]
    row: dict[str, float] = {}
    if "W1" in results:
        w1 = results["W1"]
        row["W1 p50 ms"] = w1["metrics"]["latency_create_plus_wait"]["p50_ms"]
        row["W1 p95 ms"] = w1["metrics"]["latency_create_plus_wait"]["p95_ms"]
        row["W1 server CPU per run ms"] = 1000 * w1["server_cpu_s"] / w1["metrics"]["n"]
    if "W2" in results:
        w2 = results["W2"]
        row["W2 runs/s (32 clients)"] = w2["metrics"]["runs_per_s"]
        row["W2 server CPU per run ms"] = 1000 * w2["server_cpu_s"] / w2["metrics"]["n"]
    if "W6" in results:
        row["W6 200 x 2 s, wall s"] = results["W6"]["metrics"]["wall_s"]
    return row


def side(label: str) -> list[dict[str, float]]:
    return [figures(path) for path in sorted(glob.glob(f"{out}/{label}.*.json"))]


before, after = side("before"), side("after")
print(f"{mode}: {len(before)} interleaved rounds; results in {out}")
print("| | before (median) | after (median) | after / before | each round's after / before |")
print("|---|---|---|---|---|")
for key in before[0]:
    median_before = statistics.median(row[key] for row in before)
    median_after = statistics.median(row[key] for row in after)
    rounds = ", ".join(f"{a[key] / b[key]:.2f}" for b, a in zip(before, after, strict=True))
    print(f"| {key} | {median_before:.2f} | {median_after:.2f} | {median_after / median_before:.2f}x | {rounds} |")
PY
