"""The `store` fixture, parametrized over every backend, and a way to open a second instance.

Backends whose module does not exist yet are skipped with a reason, so the suite picks them up as
soon as they land. PostgreSQL needs `RUNPLANE_TEST_POSTGRES_URL`; every test gets a blank database
(one per session, emptied before each test: creating one per test cost most of the suite's time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runplane.core.store import Store
from runplane.testing import FakeClock
from tests._services import postgres_url
from tests.conformance._support import (
    Backend,
    OpenAnother,
    PostgresDatabases,
    open_checked,
    require_backend,
)

BACKEND_PARAMS = [
    pytest.param("memory"),
    pytest.param("sqlite-memory"),
    pytest.param("sqlite-file"),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.fixture
def clock() -> FakeClock:
    """The one clock every store instance of a test reads."""
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    """The session's reusable PostgreSQL database (None when no server is configured)."""
    base = postgres_url()
    if base is None:
        yield None
        return
    databases = PostgresDatabases(base)
    try:
        yield databases
    finally:
        databases.drop()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_databases: PostgresDatabases | None
) -> Iterator[Backend]:
    name: str = request.param
    require_backend(name)
    if name == "memory":
        yield Backend(name, "memory:", multi_instance=False)
    elif name == "sqlite-memory":
        yield Backend(name, "sqlite:///:memory:", multi_instance=False)
    elif name == "sqlite-file":
        yield Backend(name, f"sqlite:///{tmp_path / 'runplane.db'}", multi_instance=True)
    else:
        if postgres_databases is None:
            pytest.skip("postgres: RUNPLANE_TEST_POSTGRES_URL is not set")
        yield Backend(name, postgres_databases.fresh(), multi_instance=True)


@pytest.fixture
async def store(backend: Backend, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await open_checked(backend.url, clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def open_another(backend: Backend, clock: FakeClock, store: Store) -> AsyncIterator[OpenAnother]:
    """Open another instance on the store's database, as a second process would (same clock).

    For single-instance backends (`memory:`, `sqlite:///:memory:`) this returns `store` itself.
    """
    opened: list[Store] = []

    async def another() -> Store:
        if not backend.multi_instance:
            return store
        instance = await open_checked(backend.url, clock)
        opened.append(instance)
        return instance

    try:
        yield another
    finally:
        for instance in opened:
            await instance.close()
