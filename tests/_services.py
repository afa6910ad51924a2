from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

# Helpers for tests that need the throwaway PostgreSQL / Redis servers.
#
# scripts/test.sh (and scripts/services.sh) export the server URLs in
# RUNPLANE_TEST_POSTGRES_URL and RUNPLANE_TEST_REDIS_URL. Tests should skip
# when the helper returns None.

POSTGRES_URL_ENV = "RUNPLANE_TEST_POSTGRES_URL"
REDIS_URL_ENV = "RUNPLANE_TEST_REDIS_URL"

_MAINTENANCE_DB = "postgres"
_PROTECTED_DBS = frozenset({"postgres", "template0", "template1"})


def _env_url(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def postgres_url() -> str | None:
    """URL of the test PostgreSQL server, or None when not configured."""
    return _env_url(POSTGRES_URL_ENV)


def redis_url() -> str | None:
    """URL of the test Redis server, or None when not configured."""
    return _env_url(REDIS_URL_ENV)


def require_postgres_url() -> str:
    """URL of the test PostgreSQL server; skips the calling test when none is configured."""
    url = postgres_url()
    if url is None:
        pytest.skip(f"postgres: {POSTGRES_URL_ENV} is not set")
    return url


def require_redis_url() -> str:
    """URL of the test Redis server; skips the calling test when none is configured."""
    url = redis_url()
    if url is None:
        pytest.skip(f"redis: {REDIS_URL_ENV} is not set")
    return url


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def fresh_postgres_database(base_url: str, prefix: str = "runplane_test") -> str:
    """Create a uniquely named, empty database on base_url's server.

    Returns the URL of the new database (same credentials/host/query as
    base_url). Drop it with drop_postgres_database().
    """
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(base_url, name)


def drop_postgres_database(url: str) -> None:
    """Drop the database named in url (terminating open connections to it)."""
    import psycopg
    from psycopg import sql

    name = _database_name(url)
    if not name or name in _PROTECTED_DBS:
        raise ValueError(f"refusing to drop database {name!r}")
    admin_url = _with_database(url, _MAINTENANCE_DB)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(query.format(sql.Identifier(name)))


@contextlib.contextmanager
def postgres_database(base_url: str | None = None) -> Iterator[str]:
    """A fresh, empty database on the test server (or on `base_url`'s) for the block, dropped after."""
    url = fresh_postgres_database(base_url or require_postgres_url())
    try:
        yield url
    finally:
        drop_postgres_database(url)
