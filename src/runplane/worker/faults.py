"""Infrastructure faults versus run failures, and how long to wait before trying again.

A run fails when its graph raises. A dependency failing under it (the store, the event bus, the
checkpointer's or LangGraph store's database) is weather: the attempt pauses, retries with backoff,
and continues from its last checkpoint once the dependency is back. Telling the two apart:

- `StoreUnavailable` (and its `InfrastructureFault`) is raised only by runplane's stores and buses.
- A driver's connection-class error (psycopg `OperationalError`/`InterfaceError`, a pool timeout,
  SQLite "disk full", "read-only", I/O or lock errors, a Redis connection error, a refused socket)
  counts only when it came out of persistence code: a graph node that talks to its own database and
  gets the same error class has failed by itself, and ends `error` as before.

Drivers are recognized by module and class name, so the worker needs none of them installed.
"""

from __future__ import annotations

import random
import sqlite3
import traceback
from collections.abc import Iterator
from types import TracebackType

from runplane.core.errors import InfrastructureFault, StoreUnavailable

#: Modules whose frames on a traceback mean "this came out of persistence, not the graph's code".
PERSISTENCE_MODULES = (
    "langgraph.checkpoint.",
    "langgraph.store.",
    "psycopg_pool.",
    "aiosqlite.",
    "redis.",
    "runplane.stores.",
    "runplane.events.",
    "runplane.db.",
    "runplane.runtime.checkpointer",
    "runplane.runtime.langgraph_store",
    "runplane.runtime._databases",
)

#: Driver exception classes (by name, along the MRO) that mean "the server or the disk is not there".
_DRIVER_FAULTS = {
    "psycopg": frozenset({"OperationalError", "InterfaceError", "PoolTimeout", "TooManyRequests"}),
    "psycopg_pool": frozenset({"PoolTimeout", "TooManyRequests"}),
    "redis": frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"}),
}

#: SQLite primary result codes of a database that cannot be written now but may be later.
_SQLITE_FAULTS = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)

#: Backoff between tries: the first pause, its growth and its cap (seconds).
BACKOFF_FIRST = 0.1
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 2.0


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, what caused it (`raise ... from`, or raised while handling), and the members of
    exception groups, each once."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)


def _is_driver_fault(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and (code & 0xFF) in _SQLITE_FAULTS
    if isinstance(exc, ConnectionError):  # refused, reset, broken pipe: the OS says the peer is gone
        return True
    for cls in type(exc).__mro__:
        names = _DRIVER_FAULTS.get(cls.__module__.split(".", 1)[0])
        if names is not None and cls.__name__ in names:
            return True
    return False


def _from_persistence(tb: TracebackType | None) -> bool:
    for frame, _ in traceback.walk_tb(tb):
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(PERSISTENCE_MODULES):
            return True
    return False


def is_infrastructure(exc: BaseException) -> bool:
    """True when `exc` is a dependency's failure rather than the graph's own (see the module doc)."""
    for current in _chain(exc):
        if isinstance(current, StoreUnavailable):
            return True
        if _is_driver_fault(current) and _from_persistence(current.__traceback__):
            return True
    return False


def as_fault(exc: BaseException) -> InfrastructureFault | None:
    """An `InfrastructureFault` describing `exc` when it is one (raise it `from exc`), else None."""
    if isinstance(exc, InfrastructureFault):
        return exc
    if not is_infrastructure(exc):
        return None
    return InfrastructureFault(f"{type(exc).__name__}: {exc}")


class Backoff:
    """Exponential pauses with full jitter (half to all of the step), so workers that lost a
    dependency together do not come back to it in lockstep."""

    def __init__(
        self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP, factor: float = BACKOFF_FACTOR
    ) -> None:
        self.first, self.cap, self.factor = first, cap, factor
        self.step = first
        self.tries = 0

    def next(self) -> float:
        """The pause before the next try."""
        delay = self.step * random.uniform(0.5, 1.0)
        self.step = min(self.cap, self.step * self.factor)
        self.tries += 1
        return delay

    def reset(self) -> None:
        self.step = self.first
        self.tries = 0
