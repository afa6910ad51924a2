#!/usr/bin/env bash
# Throwaway PostgreSQL 15 + Redis for an interactive dev session.
#
#   scripts/services.sh start    start both, write .services.env
#   source .services.env         export RUNPLANE_TEST_POSTGRES_URL / _REDIS_URL
#   scripts/services.sh env      print .services.env (eval-able)
#   scripts/services.sh status   say whether they are running
#   scripts/services.sh stop     stop both, delete their data and .services.env
#
# ./scripts/test.sh reuses the servers when the URLs are exported.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/_services_lib.sh
. "$ROOT/scripts/_services_lib.sh"

ENV_FILE="$ROOT/.services.env"

# Print the services dir recorded in .services.env (empty if none).
recorded_dir() {
    [ -f "$ENV_FILE" ] || return 0
    sed -n 's/^export RUNPLANE_SERVICES_DIR=//p' "$ENV_FILE" | head -n 1 | tr -d "'\""
}

cmd_start() {
    local dir
    dir="$(recorded_dir)"
    if [ -n "$dir" ]; then
        if rp_services_alive "$dir"; then
            rp_log "already running (scripts/services.sh stop to stop):"
            cat "$ENV_FILE"
            return 0
        fi
        rp_log "cleaning up stale services in $dir"
        rp_services_stop "$dir"
        rm -f "$ENV_FILE"
    fi

    rp_ensure_redis_server
    RP_DIR=""
    local started=0
    # Undo a half-finished start (error or Ctrl-C).
    trap 'if [ "$started" = 0 ] && [ -n "$RP_DIR" ]; then rp_services_stop "$RP_DIR"; fi' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    rp_services_init
    rp_start_postgres
    rp_start_redis
    {
        printf '# written by scripts/services.sh start; stop with scripts/services.sh stop\n'
        printf 'export RUNPLANE_TEST_POSTGRES_URL=%q\n' "$RP_PG_URL"
        printf 'export RUNPLANE_TEST_REDIS_URL=%q\n' "$RP_REDIS_URL"
        printf 'export RUNPLANE_SERVICES_DIR=%q\n' "$RP_DIR"
    } >"$ENV_FILE"
    started=1
    trap - EXIT INT TERM
    rp_log "started; run: source .services.env"
    cat "$ENV_FILE"
}

cmd_stop() {
    local dir
    dir="$(recorded_dir)"
    if [ -z "$dir" ]; then
        rp_log "not running (no .services.env)"
        rm -f "$ENV_FILE"
        return 0
    fi
    rp_services_stop "$dir"
    rm -f "$ENV_FILE"
    rp_log "stopped"
}

cmd_env() {
    [ -f "$ENV_FILE" ] || rp_die "not running; use: scripts/services.sh start"
    cat "$ENV_FILE"
}

cmd_status() {
    local dir
    dir="$(recorded_dir)"
    if [ -n "$dir" ] && rp_services_alive "$dir"; then
        echo "running"
        cat "$ENV_FILE"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|env|status}" >&2
        exit 2
        ;;
esac
