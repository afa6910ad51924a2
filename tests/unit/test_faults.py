"""Telling a dependency's failure (ride it out) from the graph's own (the run fails)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from runplane.core.errors import InfrastructureFault, StoreUnavailable
from runplane.worker import faults


def raised_in(module: str, make: Callable[[], BaseException]) -> BaseException:
    """`make()`'s exception as raised by code of `module` (its frames carry that module name)."""
    namespace: dict[str, Any] = {"__name__": module, "make": make}
    exec("def fail():\n    raise make()\n", namespace)
    try:
        namespace["fail"]()
    except BaseException as exc:
        return exc
    raise AssertionError("unreachable")


def real_sqlite_error(path: Path, code: str) -> sqlite3.Error:
    """A genuine SQLite error: `readonly` (SQLITE_READONLY) or `constraint` (SQLITE_CONSTRAINT)."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    try:
        if code == "readonly":
            conn.execute("PRAGMA query_only = ON")
            conn.execute("INSERT INTO t VALUES (2)")
        else:
            conn.execute("INSERT INTO t VALUES (1)")
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "make",
    [
        lambda: psycopg.OperationalError("server closed the connection unexpectedly"),
        lambda: psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
        lambda: psycopg.InterfaceError("the connection is closed"),
        lambda: PoolTimeout("couldn't get a connection after 30.00 sec"),
        lambda: ConnectionRefusedError(111, "Connection refused"),
    ],
)
def test_driver_connection_errors_from_persistence_code_are_infrastructure(make: Any) -> None:
    for module in (
        "langgraph.checkpoint.postgres.aio",
        "psycopg_pool.pool_async",
        "langgraph.store.postgres",
    ):
        assert faults.is_infrastructure(raised_in(module, make))


@pytest.mark.parametrize(
    "make",
    [
        lambda: psycopg.OperationalError("server closed the connection unexpectedly"),
        lambda: ConnectionRefusedError(111, "Connection refused"),
        lambda: ValueError("boom"),
    ],
)
def test_the_same_errors_raised_by_the_graphs_own_code_are_run_failures(make: Any) -> None:
    assert not faults.is_infrastructure(raised_in("my_project.nodes", make))
    assert faults.as_fault(raised_in("my_project.nodes", make)) is None


def test_runplane_store_and_bus_errors_are_infrastructure_wherever_they_surface() -> None:
    assert faults.is_infrastructure(raised_in("my_project.nodes", lambda: StoreUnavailable("down")))
    fault = faults.as_fault(StoreUnavailable("down"))
    assert isinstance(fault, InfrastructureFault)


def test_causes_and_exception_groups_are_looked_through() -> None:
    cause = raised_in("langgraph.checkpoint.sqlite.aio", lambda: psycopg.OperationalError("gone"))
    try:
        raise RuntimeError("wrapped") from cause
    except RuntimeError as wrapped:
        assert faults.is_infrastructure(wrapped)
    group = ExceptionGroup("tasks", [ValueError("x"), StoreUnavailable("down")])
    assert faults.is_infrastructure(group)
    assert not faults.is_infrastructure(ExceptionGroup("tasks", [ValueError("x")]))


def test_sqlite_errors_count_by_result_code(tmp_path: Path) -> None:
    readonly = real_sqlite_error(tmp_path / "a.db", "readonly")
    assert readonly.sqlite_errorcode & 0xFF == 8  # SQLITE_READONLY
    assert faults.is_infrastructure(raised_in("aiosqlite.core", lambda: readonly))
    constraint = real_sqlite_error(tmp_path / "b.db", "constraint")
    assert not faults.is_infrastructure(raised_in("aiosqlite.core", lambda: constraint))
    # "database or disk is full" (SQLITE_FULL) and I/O errors are weather too.
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    assert faults.is_infrastructure(raised_in("langgraph.checkpoint.sqlite.aio", lambda: full))


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = faults.Backoff(first=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= d <= 1.0 for d in delays[5:])  # capped, never below half the step
    assert len(set(delays)) > 1  # jittered
    backoff.reset()
    assert backoff.next() <= 0.1
