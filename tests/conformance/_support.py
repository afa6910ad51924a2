"""Builders and a checking proxy shared by the conformance tests."""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

from runplane.core.models import (
    SINGLE_USER,
    IfNotExists,
    Json,
    MultitaskStrategy,
    NewRun,
    NewThread,
    Outcome,
    Run,
    RunStatus,
    Thread,
    ThreadStatus,
    TokenUsage,
)
from runplane.core.store import Store
from runplane.stores import open_store
from runplane.testing import FakeClock
from tests._services import drop_postgres_database, fresh_postgres_database

# Bounded by default (the whole suite must stay fast); RUNPLANE_TEST_HYPOTHESIS=thorough digs deeper.
settings.register_profile(
    "runplane-default",
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "runplane-thorough",
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def hypothesis_profile() -> str:
    """The profile name the agreement tests use (not loaded globally: other tiers keep theirs)."""
    return (
        "runplane-thorough"
        if os.environ.get("RUNPLANE_TEST_HYPOTHESIS") == "thorough"
        else "runplane-default"
    )


OWNER = "alice"
OTHER = "bob"

#: backend name -> the module `open_store` imports for it (None: always available).
BACKEND_MODULES: dict[str, str | None] = {
    "memory": None,
    "sqlite-memory": "runplane.stores.sqlite.store",
    "sqlite-file": "runplane.stores.sqlite.store",
    "postgres": "runplane.stores.postgres.store",
}


def module_missing(module: str | None) -> bool:
    """True when a backend's module is not written yet. A module that exists but fails to import is
    NOT missing: importing it later raises, so a broken backend errors instead of silently skipping."""
    if module is None:
        return False
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def require_backend(name: str) -> None:
    """Skip the calling test when backend `name` has no module yet."""
    module = BACKEND_MODULES[name]
    if module_missing(module):
        pytest.skip(f"{name}: {module} does not exist yet")


@dataclass(frozen=True)
class Backend:
    """A database under test: a URL every instance opens, and whether instances share it."""

    name: str
    url: str
    #: True when a second `open_store(url)` is another view of the same data (two "processes").
    #: False for `memory:` and `sqlite:///:memory:`, where the second instance is the first one.
    multi_instance: bool


async def open_checked(url: str, clock: FakeClock) -> Store:
    """Open the store at `url` behind a `MutationCheckingStore`."""
    store = open_store(url, clock=clock)
    await store.open()
    return MutationCheckingStore(store)


class MutationCheckingStore:
    """A transparent proxy that asserts a store never mutates a record after returning it.

    It keeps a deep copy of every result and, after each later call, checks that the objects it
    handed out still equal their copies (langgraph's `memory_assert.py` does the same). Tests that
    mutate results on purpose use `.inner`.
    """

    #: Bound on remembered results, so the quadratic check stays cheap in the larger tests.
    MAX_REMEMBERED = 500

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._handed_out: list[tuple[Any, Any]] = []

    def __repr__(self) -> str:
        return f"<checked {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def checked(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            self.assert_unchanged()
            if result is not None and len(self._handed_out) < self.MAX_REMEMBERED:
                self._handed_out.append((result, copy.deepcopy(result)))
            return result

        return checked

    def assert_unchanged(self) -> None:
        for result, snapshot in self._handed_out:
            assert result == snapshot, f"the store mutated a record it had returned: {snapshot!r}"


def unwrap(store: Store) -> Store:
    return getattr(store, "inner", store)


OpenAnother = Callable[[], Awaitable[Store]]


class PostgresDatabases:
    """One PostgreSQL database for the session, emptied before each use.

    `CREATE DATABASE` costs about 0.2 s on the test server, which over a few hundred tests is most
    of the suite's time; emptying every table (except the migrations record) gives each test the
    same blank, migrated database in a few milliseconds.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.url: str | None = None

    def fresh(self) -> str:
        """The URL of an empty database (the store migrates it on open the first time)."""
        if self.url is None:
            self.url = fresh_postgres_database(self.base_url, prefix="runplane_conformance")
            return self.url
        with psycopg.connect(self.url, autocommit=True) as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                    " AND tablename <> 'runplane_migrations'"
                )
            ]
            if tables:
                names = sql.SQL(", ").join(sql.Identifier(name) for name in tables)
                conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))
        return self.url

    def drop(self) -> None:
        if self.url is not None:
            drop_postgres_database(self.url)
            self.url = None


# -- builders -------------------------------------------------------------------------------------


def new_run(
    run_id: str,
    thread_id: str = "t1",
    *,
    owner: str = OWNER,
    strategy: MultitaskStrategy = "enqueue",
    if_not_exists: IfNotExists = "create",
    assistant_id: str = "agent",
    **changes: Any,
) -> NewRun:
    return NewRun(
        run_id=run_id,
        thread_id=thread_id,
        assistant_id=assistant_id,
        owner=owner,
        multitask_strategy=strategy,
        if_not_exists=if_not_exists,
        **changes,
    )


async def make_thread(
    store: Store, thread_id: str = "t1", owner: str = OWNER, metadata: Json | None = None
) -> Thread:
    return await store.create_thread(NewThread(owner=owner, thread_id=thread_id, metadata=metadata or {}))


async def add_run(store: Store, run_id: str, thread_id: str = "t1", **kwargs: Any) -> Run:
    return (await store.create_run(new_run(run_id, thread_id, **kwargs))).run


async def claim(store: Store, worker_id: str = "w1", lease_seconds: float = 30.0) -> Run:
    run = await store.claim_run(worker_id, lease_seconds)
    assert run is not None, "expected a runnable run"
    return run


async def running_run(store: Store, run_id: str = "r1", thread_id: str = "t1", **kwargs: Any) -> Run:
    """Create a run on its own thread and claim it."""
    await add_run(store, run_id, thread_id, **kwargs)
    run = await claim(store)
    assert run.run_id == run_id
    return run


def outcome(status: RunStatus = "success", thread_status: ThreadStatus = "idle", **changes: Any) -> Outcome:
    return Outcome(status=status, thread_status=thread_status, **changes)


def usage(input_tokens: int, output_tokens: int) -> TokenUsage:
    return TokenUsage(input_tokens, output_tokens, input_tokens + output_tokens)


__all__ = [
    "OTHER",
    "OWNER",
    "SINGLE_USER",
    "Backend",
    "OpenAnother",
    "add_run",
    "claim",
    "make_thread",
    "new_run",
    "outcome",
    "running_run",
    "usage",
]
