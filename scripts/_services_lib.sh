# shellcheck shell=bash
# Shared helpers for scripts/test.sh and scripts/services.sh.
#
# Starts a throwaway PostgreSQL 15 and a throwaway Redis, both bound to
# 127.0.0.1 on free ports, with all state kept in one temporary directory
# ("services dir"). Source this file; do not execute it.
#
# Public functions:
#   rp_ensure_redis_server       install redis-server via apt if missing
#   rp_ensure_chromium           install Debian's chromium via apt if missing (browser tests)
#   rp_services_init             create the services dir (sets RP_DIR)
#   rp_start_postgres            start PG in $RP_DIR (sets RP_PG_URL)
#   rp_start_redis               start Redis in $RP_DIR (sets RP_REDIS_URL)
#   rp_services_alive DIR        true if every server started in DIR is up
#   rp_services_stop DIR         stop whatever runs in DIR and delete DIR

RP_PG_VERSION="${RP_PG_VERSION:-15}"

rp_log() { printf '[runplane-services] %s\n' "$*" >&2; }
rp_die() { rp_log "ERROR: $*"; exit 1; }
rp_is_root() { [ "$(id -u)" -eq 0 ]; }

rp_python() {
    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    if [ -x "$root/.venv/bin/python" ]; then
        printf '%s\n' "$root/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    else
        rp_die "python3 not found"
    fi
}

# Print a currently free TCP port on 127.0.0.1.
rp_free_port() {
    "$(rp_python)" -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
'
}

# Print the absolute path of a PostgreSQL binary (initdb, pg_ctl, ...).
rp_find_pg_bin() {
    local name="$1" candidate
    for candidate in "/usr/lib/postgresql/$RP_PG_VERSION/bin/$name" "$(command -v "$name" 2>/dev/null || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    rp_die "$name not found (looked on PATH and in /usr/lib/postgresql/$RP_PG_VERSION/bin); install postgresql-$RP_PG_VERSION or set RUNPLANE_TEST_POSTGRES_URL"
}

# Run a privileged command: directly as root, via passwordless sudo otherwise.
rp_privileged() {
    if rp_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

rp_ensure_redis_server() {
    if command -v redis-server >/dev/null 2>&1; then
        return 0
    fi
    if ! rp_is_root && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        rp_die "redis-server is not installed and we are not root (and no passwordless sudo). Install it with 'sudo apt-get install redis-server', or set RUNPLANE_TEST_REDIS_URL to an existing Redis."
    fi
    rp_log "redis-server not found; installing it with apt-get (takes a little while)"
    rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq \
        || rp_die "apt-get update failed"
    rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq redis-server >/dev/null \
        || rp_die "apt-get install redis-server failed"
    command -v redis-server >/dev/null 2>&1 || rp_die "redis-server still not on PATH after installing it"
}

# The dashboard's browser tests drive the system Chromium (Playwright never downloads one).
# Installs it with apt when missing; retries after `apt-get update` when the package lists are stale.
# Not being able to install it is not fatal here: outside CI those tests skip, in CI they fail loudly.
rp_ensure_chromium() {
    local bin="${RUNPLANE_TEST_CHROMIUM:-/usr/bin/chromium}"
    if [ -x "$bin" ]; then
        return 0
    fi
    if ! rp_is_root && ! { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; then
        rp_log "chromium is not installed and we are not root: install it with 'sudo apt-get install chromium' for the browser tests"
        return 0
    fi
    rp_log "chromium not found; installing it with apt-get (for the dashboard's browser tests)"
    if ! rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null; then
        rp_log "apt-get install chromium failed; updating the package lists and retrying"
        rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq \
            && rp_privileged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium >/dev/null \
            || rp_log "apt-get install chromium failed; the browser tests will skip (or fail in CI)"
    fi
}

# Decide which OS user runs PostgreSQL (initdb refuses to run as root).
# Sets RP_PG_RUN_AS: empty = current user, otherwise a user name.
rp_pick_pg_user() {
    if ! rp_is_root; then
        RP_PG_RUN_AS=""
        return 0
    fi
    if id -u postgres >/dev/null 2>&1; then
        RP_PG_RUN_AS="postgres"
    else
        if ! id -u runplane-pg >/dev/null 2>&1; then
            rp_log "creating system user runplane-pg to run PostgreSQL"
            useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin runplane-pg \
                || rp_die "useradd runplane-pg failed"
        fi
        RP_PG_RUN_AS="runplane-pg"
    fi
}

# Run a command as the PostgreSQL user (cwd "/" so it is always accessible).
rp_as_pg_user() {
    if [ -z "${RP_PG_RUN_AS:-}" ]; then
        (cd / && "$@")
    elif command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u "$RP_PG_RUN_AS" -- "$@")
    else
        local cmd
        cmd="$(printf '%q ' "$@")"
        (cd / && su -s /bin/sh "$RP_PG_RUN_AS" -c "$cmd")
    fi
}

# Create the services dir and record its metadata. Sets RP_DIR.
rp_services_init() {
    rp_pick_pg_user
    local base
    for base in "${TMPDIR:-/tmp}" /tmp; do
        RP_DIR="$(mktemp -d "$base/runplane-svc.XXXXXX")" || continue
        chmod 755 "$RP_DIR"
        if rp_as_pg_user test -x "$RP_DIR" 2>/dev/null; then
            break
        fi
        rm -rf "$RP_DIR"
        RP_DIR=""
    done
    [ -n "${RP_DIR:-}" ] || rp_die "could not create a temp dir traversable by the PostgreSQL user"
    mkdir -p "$RP_DIR/pg" "$RP_DIR/redis"
    chmod 700 "$RP_DIR/pg"
    if [ -n "$RP_PG_RUN_AS" ]; then
        chown "$RP_PG_RUN_AS" "$RP_DIR/pg"
    fi
    printf 'RP_PG_RUN_AS=%q\n' "$RP_PG_RUN_AS" >"$RP_DIR/state"
}

rp_start_postgres() {
    [ -n "${RP_DIR:-}" ] || rp_die "rp_services_init must run first"
    local initdb pg_ctl port attempt pgdir="$RP_DIR/pg"
    initdb="$(rp_find_pg_bin initdb)" || exit 1
    pg_ctl="$(rp_find_pg_bin pg_ctl)" || exit 1
    RP_PG_CTL="$pg_ctl"
    printf 'RP_PG_CTL=%q\n' "$pg_ctl" >>"$RP_DIR/state"

    rp_as_pg_user mkdir -p "$pgdir/sock"
    if ! rp_as_pg_user "$initdb" -D "$pgdir/data" -A trust -U postgres -E UTF8 \
            --no-locale --no-sync >"$pgdir/initdb.log" 2>&1; then
        cat "$pgdir/initdb.log" >&2
        rp_die "initdb failed"
    fi

    for attempt in 1 2 3; do
        port="$(rp_free_port)" || exit 1
        if rp_as_pg_user "$pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w -t 60 \
                -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='$pgdir/sock' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
                start >"$pgdir/pg_ctl.log" 2>&1; then
            RP_PG_PORT="$port"
            RP_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
            printf 'RP_PG_PORT=%q\n' "$port" >>"$RP_DIR/state"
            return 0
        fi
        if grep -qi 'could not bind\|address already in use' "$pgdir/postgres.log" 2>/dev/null; then
            rp_log "PostgreSQL port $port was taken, retrying ($attempt/3)"
            rp_pg_stop "$RP_DIR"
            continue
        fi
        break
    done
    cat "$pgdir/pg_ctl.log" >&2 || true
    tail -n 50 "$pgdir/postgres.log" >&2 || true
    rp_die "could not start PostgreSQL"
}

# PING Redis on 127.0.0.1:$1 using bash's /dev/tcp (no redis-cli needed).
rp_redis_ping() {
    local port="$1" reply=""
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'PING\r\n' >&3
        IFS= read -r -t 2 reply <&3 || exit 1
        exec 3>&-
        [[ "$reply" == "+PONG"* ]]
    ) 2>/dev/null
}

rp_start_redis() {
    [ -n "${RP_DIR:-}" ] || rp_die "rp_services_init must run first"
    command -v redis-server >/dev/null 2>&1 || rp_die "redis-server not found (call rp_ensure_redis_server)"
    local port attempt i rdir="$RP_DIR/redis"
    for attempt in 1 2 3; do
        port="$(rp_free_port)" || exit 1
        rm -f "$rdir/redis.pid"
        : >"$rdir/redis.log"
        redis-server --save "" --appendonly no --daemonize yes \
            --pidfile "$rdir/redis.pid" --port "$port" --bind 127.0.0.1 \
            --dir "$rdir" --logfile "$rdir/redis.log" >/dev/null 2>&1 || true
        for i in $(seq 1 100); do
            if rp_redis_ping "$port"; then
                RP_REDIS_PORT="$port"
                RP_REDIS_URL="redis://127.0.0.1:$port/0"
                printf 'RP_REDIS_PORT=%q\n' "$port" >>"$RP_DIR/state"
                return 0
            fi
            if grep -qi 'address already in use\|could not create server' "$rdir/redis.log" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        rp_redis_stop "$RP_DIR"
        if grep -qi 'address already in use\|could not create server' "$rdir/redis.log" 2>/dev/null; then
            rp_log "Redis port $port was taken, retrying ($attempt/3)"
            continue
        fi
        break
    done
    tail -n 30 "$rdir/redis.log" >&2 || true
    rp_die "could not start redis-server"
}

# True if pid $1 exists and is not a zombie (daemons get reparented, and a
# container's PID 1 does not always reap them).
rp_pid_running() {
    local pid="$1" state=""
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/stat" ]; then
        state="$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
        [ "$state" != "Z" ] || return 1
    fi
    return 0
}

# Wait up to $2 tenths of a second for pid $1 to exit.
rp_wait_pid_gone() {
    local pid="$1" tries="$2" i
    for i in $(seq 1 "$tries"); do
        rp_pid_running "$pid" || return 0
        sleep 0.1
    done
    ! rp_pid_running "$pid"
}

rp_pg_stop() {
    local dir="$1" pid
    local data="$dir/pg/data"
    [ -f "$data/postmaster.pid" ] || return 0
    pid="$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    rp_pid_running "$pid" || return 0
    if [ -n "${RP_PG_CTL:-}" ]; then
        rp_as_pg_user "$RP_PG_CTL" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
        rp_wait_pid_gone "$pid" 1 && return 0
    fi
    kill -INT "$pid" 2>/dev/null || true          # "fast" shutdown
    rp_wait_pid_gone "$pid" 100 && return 0
    kill -QUIT "$pid" 2>/dev/null || true         # "immediate" shutdown
    rp_wait_pid_gone "$pid" 50 && return 0
    kill -KILL "$pid" 2>/dev/null || true
    rp_wait_pid_gone "$pid" 20 || rp_log "WARNING: postgres (pid $pid) did not exit"
}

rp_redis_stop() {
    local dir="$1" pid
    [ -f "$dir/redis/redis.pid" ] || return 0
    pid="$(cat "$dir/redis/redis.pid" 2>/dev/null || true)"
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    rp_wait_pid_gone "$pid" 100 && return 0
    kill -KILL "$pid" 2>/dev/null || true
    rp_wait_pid_gone "$pid" 20 || rp_log "WARNING: redis-server (pid $pid) did not exit"
}

# Load the metadata written by rp_services_init & co. into this shell.
rp_load_state() {
    local dir="$1"
    RP_PG_RUN_AS="" RP_PG_CTL="" RP_PG_PORT="" RP_REDIS_PORT=""
    if [ -f "$dir/state" ]; then
        # shellcheck disable=SC1091
        . "$dir/state"
    fi
}

rp_services_alive() {
    local dir="$1"
    [ -n "$dir" ] && [ -d "$dir" ] || return 1
    rp_load_state "$dir"
    if [ -n "$RP_PG_PORT" ]; then
        local pid
        pid="$(head -n 1 "$dir/pg/data/postmaster.pid" 2>/dev/null || true)"
        [ -n "$pid" ] && rp_pid_running "$pid" || return 1
    fi
    if [ -n "$RP_REDIS_PORT" ]; then
        rp_redis_ping "$RP_REDIS_PORT" || return 1
    fi
    return 0
}

# Stop everything started in DIR and remove DIR. Never fails.
rp_services_stop() {
    local dir="${1:-}"
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    case "$dir" in
        */runplane-svc.*) ;;
        *) rp_log "refusing to remove unexpected dir $dir"; return 0 ;;
    esac
    rp_load_state "$dir"
    rp_redis_stop "$dir" || true
    rp_pg_stop "$dir" || true
    rm -rf "$dir" || true
}

# -- benchmarks -------------------------------------------------------------------------------------

# Serve $BENCH_APP with `runplane serve --workers ${BENCH_WORKERS:-256}` (runplane from SRC, empty:
# this checkout; the Python is $PY) on DATABASE_URL, with Redis when REDIS_URL is given, its output
# in LOG; wait until it answers. Sets SERVER_PID and BENCH_URL.
#   rp_bench_serve LOG SRC DATABASE_URL [REDIS_URL]
rp_bench_serve() {
    local log="$1" src="$2" database_url="$3" redis=() port
    [ -n "${4:-}" ] && redis=(--redis-url "$4")
    port="$(rp_free_port)" || exit 1
    (
        cd "$BENCH_APP"
        PYTHONPATH="$src" exec "$PY" -c 'import sys; from runplane.cli import main; sys.argv[0] = "runplane"; main()' \
            serve --database-url "$database_url" "${redis[@]}" --port "$port" --workers "${BENCH_WORKERS:-256}" \
            --config langgraph.json --log-level WARNING
    ) >"$log" 2>&1 &
    SERVER_PID=$!
    BENCH_URL="http://127.0.0.1:$port"
    for _ in $(seq 1 120); do
        curl -fs "$BENCH_URL/ok" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    cat "$log" >&2
    rp_die "runplane serve did not come up"
}

# Stop the server `rp_bench_serve` started.
rp_bench_stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

# For a benchmark's `trap ... EXIT`: stop the server it started ($SERVER_PID, if any), then the
# services of this run ($RP_DIR). Never fails.
rp_bench_cleanup() {
    rp_bench_stop_server
    [ -n "${RP_DIR:-}" ] && rp_services_stop "$RP_DIR"
    return 0
}

# Restart the PostgreSQL of this run durable, as a user runs it (the test services start it with
# fsync, synchronous_commit and full_page_writes off on its command line). LOG: where pg_ctl's
# output goes. Further arguments: more `-c name=value` settings.
rp_restart_postgres_durable() {
    local log="$1"
    shift
    rp_as_pg_user "$RP_PG_CTL" -D "$RP_DIR/pg/data" -l "$RP_DIR/pg/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $RP_PG_PORT -c unix_socket_directories='$RP_DIR/pg/sock' -c max_connections=300 $*" \
        restart >"$log" 2>&1 || { cat "$log" >&2; rp_die "could not restart PostgreSQL"; }
}
