"""LangGraph's long-term memory store (`BaseStore`) on runplane's database, for graphs that use
`store` (an injected `store: BaseStore` argument, `get_store()`, `Runtime.store`), as LangGraph's
own server provides it: a LangGraph project that keeps memories across threads runs unchanged, and
its memories survive restarts on SQLite and PostgreSQL like its threads do.

`memory:` -> `InMemoryStore`; `sqlite:///file` -> `AsyncSqliteStore` on the same file (its own
tables and connection); `postgresql://...` -> `AsyncPostgresStore` on a small pool.

The langgraph.json `store` section is honoured as LangGraph's server honours it:

- `index` (`dims`, `embed`, `fields`): semantic search. `embed` is a `"provider:model"` name
  (LangChain's `init_embeddings`; needs `langchain` and the provider's package) or a
  `"./file.py:function"` / `"package.module:function"` path to an embeddings object or function.
  PostgreSQL needs the pgvector extension for it, SQLite uses sqlite-vec.
- `ttl` (`default_ttl`, `refresh_on_read`, `sweep_interval_minutes`): LangGraph's own item TTLs,
  swept by the store's own sweeper (`start_ttl_sweeper`; every 5 minutes unless set), in every
  process that opens the store. The in-memory store has no TTLs: a warning says so.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from langgraph.store.base import BaseStore, IndexConfig, TTLConfig, ensure_embeddings
from langgraph.store.memory import InMemoryStore

from runplane.core.errors import InvalidInput
from runplane.runtime._databases import (
    database_kind,
    postgres_pool,
    setup_postgres_once,
    sqlite_path,
    tune_sqlite,
)
from runplane.runtime.project import Project, load_attribute

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


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The langgraph.json `store` section, resolved: the index with its embeddings loaded."""

    index: IndexConfig | None = None
    ttl: TTLConfig | None = None


def store_settings(project: Project | None) -> StoreSettings:
    """The `store` settings of a project (None: none), with `index.embed` loaded.

    Args:
        database_url: the runplane database the store shares.
        index: LangGraph's `IndexConfig` (semantic search), from langgraph.json's `store.index`.
        ttl: LangGraph's `TTLConfig` (default: per-item TTLs, refreshed on read).

    Raises:
        InvalidInput: `index` lacks `dims` or `embed`, or the embeddings cannot be loaded.
    """
    section = project.store if project is not None else {}
    index, ttl = section.get("index"), section.get("ttl")
    if index is not None and not isinstance(index, Mapping):
        raise InvalidInput("'store.index' must be an object")
    if ttl is not None and not isinstance(ttl, Mapping):
        raise InvalidInput("'store.ttl' must be an object")
    resolved: IndexConfig | None = None
    if index:
        assert project is not None
        dims, embed = index.get("dims"), index.get("embed")
        if not isinstance(dims, int) or dims <= 0 or not isinstance(embed, str) or not embed:
            raise InvalidInput("'store.index' needs 'dims' (a positive integer) and 'embed' (a string)")
        resolved = {"dims": dims, "embed": _embeddings(embed, project.base_dir)}
        if index.get("fields") is not None:
            resolved["fields"] = list(index["fields"])
    return StoreSettings(resolved, cast(TTLConfig, dict(ttl)) if ttl else None)


def _embeddings(embed: str, base_dir: Path) -> Any:
    """`embed` as LangGraph's server resolves it: a `.py:` path or module path to an embeddings
    object or function, else a `provider:model` name for LangChain's `init_embeddings`."""
    source, sep, attr = embed.rpartition(":")
    is_path = ".py:" in embed or (sep and "." in source and not source.isidentifier() and "/" not in attr)
    try:
        if is_path:
            value = load_attribute(source, attr, base_dir, f"store.index.embed {embed!r}")
            if not callable(value) and not hasattr(value, "embed_documents"):
                raise InvalidInput(f"store.index.embed {embed!r} is a {type(value).__name__}, not embeddings")
            return ensure_embeddings(value)
        return ensure_embeddings(embed)
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(f"store.index.embed {embed!r}: {type(exc).__name__}: {exc}") from exc


@asynccontextmanager
async def open_langgraph_store(
    database_url: str, settings: StoreSettings | None = None
) -> AsyncIterator[BaseStore]:
    """LangGraph's store for `database_url`, with its tables created, its index and TTLs as
    `settings` say, and its TTL sweeper running while it is open.

    Raises:
        InvalidInput: unknown scheme, the backend's extra is not installed, or the index cannot be
            set up (PostgreSQL without pgvector).
    """
    settings = settings or StoreSettings()
    kind, database_url = database_kind(database_url)
    if kind == "memory":
        if settings.ttl:
            logger.warning("'store.ttl' is not supported by the in-memory store (memory://); it is ignored")
        yield InMemoryStore(index=settings.index)
    elif kind == "sqlite":
        if AsyncSqliteStore is None:  # pragma: no cover
            raise InvalidInput("the sqlite store needs langgraph-checkpoint-sqlite")
        if settings.index and not hasattr(sqlite3.Connection, "enable_load_extension"):
            # LangGraph's SQLite index is the sqlite-vec extension; some Python builds (pyenv's
            # default, for one) compile sqlite3 without extension loading.
            raise InvalidInput(
                "'store.index' on SQLite needs the sqlite-vec extension, and this Python's sqlite3 "
                "cannot load extensions: use a Python built with loadable SQLite extensions, or "
                "PostgreSQL with pgvector"
            )
        async with AsyncSqliteStore.from_conn_string(
            sqlite_path(database_url), index=cast(Any, settings.index), ttl=settings.ttl or TTL_CONFIG
        ) as store:
            await tune_sqlite(store.conn)
            await _setup_sqlite(store)
            async with _ttl_sweeper(store, settings):
                yield store
    else:
        if AsyncPostgresStore is None:  # pragma: no cover
            raise InvalidInput("the postgres store needs: pip install 'runplane[postgres]'")
        async with postgres_pool(database_url, max_size=4) as pool:
            pg_store = AsyncPostgresStore(
                pool, index=cast(Any, settings.index), ttl=settings.ttl or TTL_CONFIG
            )
            try:
                await setup_postgres_once(pool, pg_store.setup)
            except Exception as exc:
                if settings.index and "vector" in str(exc):
                    raise InvalidInput(
                        "'store.index' on PostgreSQL needs the pgvector extension "
                        f"(CREATE EXTENSION vector): {type(exc).__name__}"
                    ) from exc
                raise
            async with _ttl_sweeper(pg_store, settings):
                yield pg_store


@asynccontextmanager
async def _ttl_sweeper(
    store: AsyncSqliteStore | AsyncPostgresStore, settings: StoreSettings
) -> AsyncIterator[None]:
    """LangGraph's own TTL sweeper of `store`, running while the context is open (as LangGraph's
    server starts it: whenever TTLs are configured)."""
    if not settings.ttl:
        yield
        return
    await store.start_ttl_sweeper()
    try:
        yield
    finally:
        await store.stop_ttl_sweeper(timeout=5)


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
