"""Stores, chosen by URL. Drivers are imported lazily so psycopg stays an optional extra."""

from __future__ import annotations

import importlib
from typing import cast

from runplane.core.clock import Clock
from runplane.core.errors import InvalidInput
from runplane.core.store import Store

DEFAULT_DATABASE_URL = "sqlite:///./runplane.db"

#: URL scheme -> "module:Class". Each class has `from_url(url, clock=...)`.
BACKENDS = {
    "memory": "runplane.stores.memory:InMemoryStore",
    "sqlite": "runplane.stores.sqlite.store:SqliteStore",
    "postgres": "runplane.stores.postgres.store:PostgresStore",
    "postgresql": "runplane.stores.postgres.store:PostgresStore",
}


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition(":")
    if not sep:
        raise InvalidInput(f"database URL {url!r} has no scheme; expected one of {sorted(BACKENDS)}")
    return scheme.split("+", 1)[0].lower()


def open_store(url: str = DEFAULT_DATABASE_URL, *, clock: Clock | None = None) -> Store:
    """A store for `url` (not yet opened): `memory:`, `sqlite:///path`, `postgresql://...`.

    Raises:
        InvalidInput: unknown scheme, or the driver's extra is not installed.
    """
    scheme = scheme_of(url)
    target = BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(f"unsupported database URL scheme {scheme!r}; expected one of {sorted(BACKENDS)}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"the {scheme} store needs an optional dependency: pip install 'runplane[postgres]' ({exc})"
        ) from exc
    return cast(Store, getattr(module, class_name).from_url(url, clock=clock))
