"""LangGraph's long-term memory store (`BaseStore`) on runplane's database, for graphs that use
`store` (an injected `store: BaseStore` argument, `get_store()`, `Runtime.store`), as LangGraph's
own server provides it: a LangGraph project that keeps memories across threads runs unchanged, and
its memories survive restarts on SQLite and PostgreSQL like its threads do.

`memory:` -> `InMemoryStore`; `sqlite:///file` -> `AsyncSqliteStore` on the same file (its own
tables and connection); `postgresql://...` -> `AsyncPostgresStore` on a small pool. A semantic
search index is configured by langgraph.json's `store.index` (`runtime/store_config.py`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from langgraph.store.base import BaseStore, TTLConfig
from langgraph.store.memory import InMemoryStore

from runplane.core.errors import InvalidInput
from runplane.runtime._databases import (
    database_kind,
    postgres_pool,
    setup_postgres_once,
    sqlite_path,
    tune_sqlite,
)

logger = logging.getLogger(__name__)

try:
    from langgraph.store.sqlite.aio import AsyncSqliteStore
except ImportError:  # pragma: no cover - a hard dependency, but keep the import failure readable
    AsyncSqliteStore = None  # type: ignore[assignment,misc]

try:
    from langgraph.store.postgres.aio import AsyncPostgresStore
except ImportError:  # pragma: no cover - the postgres extra is not installed
    AsyncPostgresStore = None  # type: ignore[assignment,misc]

#: Per-item TTLs (`ttl=` on put, LangGraph's `refresh_on_read`), swept by runplane's sweeper; items
#: never expire unless given a TTL.
TTL_CONFIG: TTLConfig = {"refresh_on_read": True}

#: `setup()` attempts on SQLite when other processes set the same file up at the same moment.
SQLITE_SETUP_ATTEMPTS = 10


@asynccontextmanager
async def open_langgraph_store(
    database_url: str, *, index: dict[str, Any] | None = None, ttl: TTLConfig | None = None
) -> AsyncIterator[BaseStore]:
    """LangGraph's store for `database_url`, with its tables created.

    Args:
        database_url: the runplane database the store shares.
        index: LangGraph's `IndexConfig` (semantic search), from langgraph.json's `store.index`.
        ttl: LangGraph's `TTLConfig` (default: per-item TTLs, refreshed on read).

    Raises:
        InvalidInput: unknown scheme, or the backend's extra is not installed.
    """
    kind, database_url = database_kind(database_url)
    if kind == "memory":
        yield InMemoryStore(index=index)  # type: ignore[arg-type]
    elif kind == "sqlite":
        if AsyncSqliteStore is None:  # pragma: no cover
            raise InvalidInput("the sqlite store needs langgraph-checkpoint-sqlite")
        async with AsyncSqliteStore.from_conn_string(
            sqlite_path(database_url),
            index=index,  # type: ignore[arg-type]
            ttl=ttl or TTL_CONFIG,
        ) as store:
            await tune_sqlite(store.conn)
            await _setup_sqlite(store)
            yield store
    else:
        if AsyncPostgresStore is None:  # pragma: no cover
            raise InvalidInput("the postgres store needs: pip install 'runplane[postgres]'")
        async with postgres_pool(database_url, max_size=4) as pool:
            pg_store = AsyncPostgresStore(pool, index=index, ttl=ttl or TTL_CONFIG)  # type: ignore[arg-type]
            await setup_postgres_once(pool, pg_store.setup)
            yield pg_store


async def _setup_sqlite(store: AsyncSqliteStore) -> None:
    """`store.setup()`, again when another process was migrating the same file at the same moment.

    Its migrations are not atomic (some are `ALTER TABLE`, and each is recorded afterwards), so a
    process that read the version just before another applied a step fails on it ("duplicate
    column", a taken version); once the other has recorded the step, the next attempt skips it.
    """
    for attempt in range(1, SQLITE_SETUP_ATTEMPTS + 1):
        try:
            await store.setup()
            return
        except sqlite3.Error as exc:
            if attempt == SQLITE_SETUP_ATTEMPTS:
                raise
            logger.debug("LangGraph store setup raced another process (%s); again", exc)
            store.is_setup = False
            await asyncio.sleep(0.05 * attempt)
