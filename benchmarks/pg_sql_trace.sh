#!/usr/bin/env bash
# Statements, transactions and server CPU per run on PostgreSQL (issue 18's hot path).
#
#   benchmarks/pg_sql_trace.sh                       200 sequential runs (threads.create + runs.wait echo)
#   TRACE_RUNS=500 TRACE_CLIENTS=16 benchmarks/pg_sql_trace.sh    concurrent clients
#   BENCH_SRC=/work/wt/before/src benchmarks/pg_sql_trace.sh      another checkout's runplane
#
# Starts a throwaway, durable PostgreSQL 15 with pg_stat_statements, serves $BENCH_APP with
# `runplane serve --workers 256` on a fresh database, warms up, resets the statistics, runs the
# runs through the SDK, and prints per run: every statement (pg_stat_statements calls / runs,
# BEGIN and COMMIT included), the transactions the database committed (pg_stat_database
# xact_commit, autocommitted statements included) and the server's CPU seconds.
# Not a test. Background loops (lease renewals, schedulers, fallback polls) are counted too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

BENCH_DIR="${BENCH_DIR:-/work/shared/bench}"
BENCH_APP="${BENCH_APP:-$BENCH_DIR/reference/app}"
TRACE_RUNS="${TRACE_RUNS:-200}"
TRACE_CLIENTS="${TRACE_CLIENTS:-1}"
REDIS="${TRACE_REDIS:-}"
PY="$ROOT/.venv/bin/python"
OUT="$(mktemp -d /tmp/runplane-pgtrace.XXXXXX)"
SERVER_PID=""

trap rp_bench_cleanup EXIT
trap 'exit 130' INT TERM

rp_services_init
rp_start_postgres
redis_url=""
if [ -n "$REDIS" ]; then rp_ensure_redis_server; rp_start_redis; redis_url="$RP_REDIS_URL"; fi
rp_restart_postgres_durable "$OUT/pg_restart.log" \
    -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on -c pg_stat_statements.max=5000
"$PY" -c "import sys, psycopg; c = psycopg.connect(sys.argv[1], autocommit=True); c.execute('CREATE DATABASE trace'); psycopg.connect(sys.argv[1].rsplit('/', 1)[0] + '/trace', autocommit=True).execute('CREATE EXTENSION pg_stat_statements')" "$RP_PG_URL"
DB_URL="${RP_PG_URL%/postgres}/trace"

rp_bench_serve "$OUT/serve.log" "${BENCH_SRC:-}" "$DB_URL" "$redis_url"
URL="$BENCH_URL"

"$PY" - "$URL" "$DB_URL" "$SERVER_PID" "$TRACE_RUNS" "$TRACE_CLIENTS" "$redis_url" <<'PYEOF'
import asyncio, os, sys, time
import psycopg
from langgraph_sdk import get_client

url, db_url, pid, runs, clients = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
redis_url = sys.argv[6]
tick = os.sysconf("SC_CLK_TCK")

def cpu() -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick

async def batch(n: int) -> None:
    client = get_client(url=url)
    todo = iter(range(n))
    async def one() -> None:
        for i in todo:
            thread = await client.threads.create()
            out = await client.runs.wait(thread["thread_id"], "echo", input={"messages": [f"m{i}"], "n": i})
            assert out["n"] == i, out
    await asyncio.gather(*(one() for _ in range(clients)))

def xacts(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]

asyncio.run(batch(20))  # warm up: pools, prepared statements, graph compiled
conn = psycopg.connect(db_url, autocommit=True)
conn.execute("SELECT pg_stat_statements_reset()")
conn.execute("SELECT pg_stat_reset()")
if redis_url:
    import redis
    bus = redis.Redis.from_url(redis_url)
    bus.config_resetstat()
time.sleep(0.6)  # the statistics collector flushes every 500 ms
x0, c0, t0 = xacts(conn), cpu(), time.monotonic()
asyncio.run(batch(runs))
time.sleep(0.6)
x1, c1, t1 = xacts(conn), cpu(), time.monotonic()
rows = conn.execute(
    "SELECT calls, regexp_replace(query, '\\s+', ' ', 'g'), total_exec_time + total_plan_time, total_plan_time FROM pg_stat_statements"
    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND query NOT LIKE '%pg_stat%' ORDER BY calls DESC"
).fetchall()
total = sum(calls for calls, *_ in rows)
begins = sum(calls for calls, q, *_ in rows if q.strip().upper().startswith("BEGIN"))
# Nested statements (inside the run-path functions) count in their caller's time as well.
top_ms = sum(ms for _, q, ms, _ in rows if not q.startswith(("EXISTS", "(", "SELECT 1 FROM ONLY")) and "p_" not in q)
print(f"runs {runs}, clients {clients}, wall {t1 - t0:.1f} s")
print(f"per run: statements {total / runs:.2f} (BEGIN..COMMIT blocks {begins / runs:.2f}),"
      f" committed transactions {(x1 - x0 - 2) / runs:.2f}, server CPU {1000 * (c1 - c0) / runs:.2f} ms")
print(f"statement time (planning and execution) per run, top-level statements: {top_ms / runs:.2f} ms")
print("calls/run  ms/run (planning)  statement")
for calls, query, ms, plan_ms in rows:
    if calls / runs >= 0.05:
        print(f"{calls / runs:7.2f}  {ms / runs:7.3f} ({plan_ms / runs:5.3f})  {query[:130]}")
if redis_url:
    stats = bus.info("commandstats")
    print(f"Redis commands per run: {sum(v['calls'] for v in stats.values()) / runs:.2f}")
    for name, value in sorted(stats.items(), key=lambda item: -item[1]["calls"]):
        if value["calls"] / runs >= 0.05:
            print(f"{value['calls'] / runs:7.2f}  {name.removeprefix('cmdstat_')}")
PYEOF
