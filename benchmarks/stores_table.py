"""The issue-18 table from agentbench JSON files: one column per run, ratios beside SQLite and beside
"before" when the same mode was measured twice (`agentbench_stores.sh` with BENCH_COMPARE).

    python benchmarks/stores_table.py sqlite.json pg.json "pg+redis.json"
    python benchmarks/stores_table.py "sqlite before.json" "sqlite.json" ...

A file's label (agentbench `--label`) names its column; a label ending in " before" pairs with the
same label without it. Not a test: figures from a shared machine, compare ratios from one session.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


def _get(result: Result, *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _cpu_per_run_ms(result: Result) -> float | None:
    cpu, ok = _get(result, "W2", "server_cpu_s"), _get(result, "W2", "metrics", "ok")
    return 1000 * cpu / ok if cpu is not None and ok else None


def _w3(key: str) -> Callable[[Result], Any]:
    return lambda result: _get(result, "W3", "metrics", "custom", key)


#: (row, value, higher is better)
ROWS: list[tuple[str, Callable[[Result], Any], bool]] = [
    ("W1 p50 ms", lambda r: _get(r, "W1", "metrics", "latency_create_plus_wait", "p50_ms"), False),
    ("W1 p95 ms", lambda r: _get(r, "W1", "metrics", "latency_create_plus_wait", "p95_ms"), False),
    ("W2 runs/s (32 clients)", lambda r: _get(r, "W2", "metrics", "runs_per_s"), True),
    ("server CPU per run (W2) ms", _cpu_per_run_ms, False),
    ("W3 custom events/s, end-to-end", _w3("events_per_s_e2e_median"), True),
    ("W3 custom events/s, first to last", _w3("events_per_s_span_median"), True),
    ("W3 first custom event ms", _w3("ttfe_ms_median"), False),
    ("W3 server CPU s", lambda r: _get(r, "W3", "server_cpu_s"), False),
    ("W6 200 x 2 s, wall s", lambda r: _get(r, "W6", "metrics", "wall_s"), False),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def _ratio(value: Any, base: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or not base:
        return "-"
    return f"{value / base:.2f}x"


def main(paths: list[str]) -> None:
    columns: list[tuple[str, Result]] = []
    for path in paths:
        with open(path) as file:
            doc = json.load(file)
        label = str(_get(doc, "meta", "label") or path).removeprefix("runplane ")
        columns.append((label, doc.get("results", {})))
    by_label = dict(columns)
    sqlite = by_label.get("sqlite")
    heads, cells = [], []
    for label, result in columns:
        heads.append(label)
        cells.append(lambda row, r=result: _fmt(row(r)))
        before = by_label.get(label + " before")
        if before is not None:
            heads.append(f"{label}: after / before")
            cells.append(lambda row, r=result, b=before: _ratio(row(r), row(b)))
        elif sqlite is not None and label not in ("sqlite",) and not label.endswith(" before"):
            if not label.startswith("sqlite"):
                heads.append(f"{label} / SQLite")
                cells.append(lambda row, r=result: _ratio(row(r), row(sqlite)))
    print("| | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for name, row, _higher in ROWS:
        print(f"| {name} | " + " | ".join(cell(row) for cell in cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
