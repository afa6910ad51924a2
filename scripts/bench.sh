#!/usr/bin/env bash
# Benchmarks (not tests: they print figures, they never fail on a number).
#
#   ./scripts/bench.sh                         the store benchmark on memory and SQLite
#   ./scripts/bench.sh NAME [args...]          benchmarks/NAME.py (or NAME.sh) with its own args
#   ./scripts/bench.sh list                    the benchmarks there are
#
# Each benchmark's docstring says what it measures and which services it needs (`source
# .services.env` after `scripts/services.sh start` for PostgreSQL and Redis). To compare against
# another checkout, put its src first: `PYTHONPATH=/path/to/other/src ./scripts/bench.sh NAME`.
set -euo pipefail
# shellcheck source=scripts/_venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"

name="${1:-store_bench}"
[ "$#" -gt 0 ] && shift
if [ "$name" = "list" ]; then
    ls benchmarks | sed -n 's/\.\(py\|sh\)$//p'
    exit 0
fi
if [ -f "benchmarks/$name.py" ]; then
    if [ "$name" = "store_bench" ] && [ "$#" -eq 0 ]; then
        set -- --stores memory,sqlite
    fi
    exec "$PY" "benchmarks/$name.py" "$@"
elif [ -f "benchmarks/$name.sh" ]; then
    export PATH="$BIN:$PATH"
    exec bash "benchmarks/$name.sh" "$@"
fi
echo "no benchmark named $name; ./scripts/bench.sh list" >&2
exit 2
