"""The psycopg edge, shared by the PostgreSQL store and bus: URLs to conninfo + pool settings, and driver
errors to core errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors

from runplane.core.errors import Conflict, InvalidInput, RunplaneError, StoreUnavailable, ThreadBusy

#: Query parameters of the URL that configure the pool; they are not passed to libpq.
POOL_PARAMS = ("pool_min_size", "pool_max_size", "pool_timeout")

#: Unique constraints whose violation means "lost a race; run the transaction again".
RACE_CONSTRAINTS = frozenset({"runs_idempotency_key", "runs_one_running_per_thread"})


# -- driver edge ----------------------------------------------------------------------------------


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn psycopg errors into core errors (`raise ... from exc`); core errors pass through."""
    try:
        yield
    except RunplaneError:
        raise
    except pg_errors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name
        if constraint == "runs_one_running_per_thread":
            raise ThreadBusy() from exc
        if constraint == "threads_pkey":
            raise Conflict("thread already exists") from exc
        if constraint == "runs_pkey":
            raise Conflict("run already exists") from exc
        raise Conflict(f"conflicts with an existing record ({constraint})") from exc
    except pg_errors.IntegrityError as exc:
        raise Conflict(f"conflicts with the current state ({exc.diag.constraint_name})") from exc
    except psycopg.DataError as exc:
        raise InvalidInput(f"the database refused a value: {exc}") from exc
    except psycopg.Error as exc:
        # Connection failures, pool timeouts, server shutdowns, and (unexpectedly) our own SQL.
        raise StoreUnavailable(f"PostgreSQL failed: {type(exc).__name__}: {exc}") from exc


def retryable(exc: psycopg.Error) -> bool:
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return True
    return isinstance(exc, pg_errors.UniqueViolation) and exc.diag.constraint_name in RACE_CONSTRAINTS


# -- URL ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool size and checkout timeout."""

    min_size: int = 1
    max_size: int = 10
    timeout: float = 30.0


DEFAULT_POOL = PoolSettings()


def parse_url(url: str) -> tuple[str, PoolSettings]:
    """Split a `postgresql://` or `postgres://` URL into a libpq conninfo and pool settings.

    `pool_min_size`, `pool_max_size` and `pool_timeout` query parameters are runplane's; every other
    parameter is passed to libpq untouched.

    Raises:
        InvalidInput: not a PostgreSQL URL, or a bad pool parameter.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0].lower()
    if scheme not in ("postgres", "postgresql"):
        raise InvalidInput(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in POOL_PARAMS}
    theirs = [(key, value) for key, value in query if key not in POOL_PARAMS]
    try:
        settings = PoolSettings(
            min_size=int(ours.get("pool_min_size", DEFAULT_POOL.min_size)),
            max_size=int(ours.get("pool_max_size", DEFAULT_POOL.max_size)),
            timeout=float(ours.get("pool_timeout", DEFAULT_POOL.timeout)),
        )
    except ValueError as exc:
        raise InvalidInput(f"bad pool parameter in database URL: {exc}") from exc
    if not 0 <= settings.min_size <= settings.max_size or settings.max_size < 1 or settings.timeout <= 0:
        raise InvalidInput(f"bad pool size or timeout in database URL: {settings}")
    new_query = urlencode(theirs, quote_via=quote) if ours else parts.query
    return urlunsplit(parts._replace(scheme="postgresql", query=new_query)), settings
