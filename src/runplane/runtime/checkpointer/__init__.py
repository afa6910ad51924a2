"""LangGraph's checkpointer, opened from our database URL, and what LangGraph's savers lack.

`open_checkpointer(url)` opens LangGraph's saver of the database, subclassed only to fence its
writes (`Fenced*Saver`, see `base.py`). `adapter_for(saver)` gives the one adapter class of each
LangGraph saver (`MemoryAdapter`, `SqliteAdapter`, `PostgresAdapter`) that savepoints, rolls back,
copies, prunes and expires threads on it, LangGraph's own class or the fenced one alike; a saver
of another kind gets `PublicSaverAdapter` (LangGraph's public API only). The adapters are the only
code that reads LangGraph's private internals, each naming the versions it was checked against
(SQLite and PostgreSQL through one `_transaction` method). `pyproject.toml` bounds those versions
above, and `scripts/test_bounds.sh` runs the adapters' contract tests
(`tests/conformance/test_saver_adapters.py`) at the lower bounds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.errors import InvalidInput
from runplane.runtime._databases import database_kind, sqlite_path
from runplane.runtime.checkpointer._own_puts import answering_from_own_puts, track_own_puts
from runplane.runtime.checkpointer.base import (
    Committed,
    Guard,
    PublicSaverAdapter,
    Savepoint,
    SaverAdapter,
    fence_writes,
    no_checkpoint_yet,
)
from runplane.runtime.checkpointer.memory import FencedMemorySaver, MemoryAdapter

try:  # Optional extras: each backend imports only what it needs.
    from runplane.runtime.checkpointer.sqlite import SqliteAdapter
except ImportError:  # pragma: no cover - a hard dependency, but keep the import failure readable
    SqliteAdapter = None  # type: ignore[assignment,misc]

try:
    from runplane.runtime.checkpointer.postgres import PostgresAdapter
except ImportError:  # pragma: no cover - the postgres extra is not installed
    PostgresAdapter = None  # type: ignore[assignment,misc]

__all__ = [
    "Committed",
    "Guard",
    "PublicSaverAdapter",
    "Savepoint",
    "SaverAdapter",
    "adapter_for",
    "answering_from_own_puts",
    "copy_thread",
    "delete_thread",
    "fence_writes",
    "no_checkpoint_yet",
    "open_checkpointer",
    "rollback",
    "savepoint",
    "track_own_puts",
]


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's saver for `database_url`, with fenced writes and its tables created.

    `memory:` -> `InMemorySaver`; `sqlite:///file` (or a bare file path) -> `AsyncSqliteSaver` on
    the same file as the store (its own tables, its own connection); `postgresql://...` ->
    `AsyncPostgresSaver` on a small connection pool.

    Raises:
        InvalidInput: unknown scheme, or the backend's extra is not installed.
    """
    kind, database_url = database_kind(database_url)
    if kind == "memory":
        yield FencedMemorySaver()
    elif kind == "sqlite":
        if SqliteAdapter is None:  # pragma: no cover
            raise InvalidInput("the sqlite checkpointer needs langgraph-checkpoint-sqlite")
        async with SqliteAdapter.open(sqlite_path(database_url)) as sqlite_saver:
            yield sqlite_saver
    else:
        if PostgresAdapter is None:  # pragma: no cover
            raise InvalidInput("the postgres checkpointer needs: pip install 'runplane[postgres]'")
        async with PostgresAdapter.open(database_url) as pg_saver:
            yield pg_saver


def adapter_for(saver: BaseCheckpointSaver[Any]) -> SaverAdapter:
    """The adapter of `saver`'s LangGraph class (a few attributes: cheap to make per call)."""
    if isinstance(saver, InMemorySaver):
        return MemoryAdapter(saver)
    if SqliteAdapter is not None and isinstance(saver, SqliteAdapter.saver_class):
        return SqliteAdapter(saver)
    if PostgresAdapter is not None and isinstance(saver, PostgresAdapter.saver_class):
        return PostgresAdapter(saver)
    return PublicSaverAdapter(saver)


async def savepoint(
    saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None = None
) -> Savepoint:
    """`SaverAdapter.savepoint` of `saver`."""
    return await adapter_for(saver).savepoint(thread_id, checkpoint_id)


async def rollback(
    saver: BaseCheckpointSaver[Any], thread_id: str, run_id: str, point: Savepoint | None
) -> None:
    """`SaverAdapter.rollback` of `saver`."""
    await adapter_for(saver).rollback(thread_id, run_id, point)


async def copy_thread(saver: BaseCheckpointSaver[Any], source: str, target: str) -> None:
    """Copy every checkpoint (all namespaces, with writes and blobs) of `source` to `target`."""
    await adapter_for(saver).copy_thread(source, target)


async def delete_thread(saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
    """Delete every checkpoint of a thread (a no-op for a thread without any)."""
    await adapter_for(saver).delete_thread(thread_id)
