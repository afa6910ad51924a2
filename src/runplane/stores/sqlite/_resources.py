"""`SqliteStore`'s assistants (with immutable versions) and thread TTLs.

The same semantics as `InMemoryStore` (see `stores/_memory_resources.py`); every write is one
`BEGIN IMMEDIATE` transaction of the store.
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal

import aiosqlite
import orjson

from runplane.core.errors import Conflict, InvalidInput, NotFound
from runplane.core.graphs import Assistant
from runplane.core.models import (
    AssistantFilter,
    AssistantPatch,
    Json,
    NewAssistant,
    Run,
    Thread,
    ThreadTtl,
)
from runplane.stores._memory_resources import patch_of, shared_assistant
from runplane.stores._rows import assistant_from_row, assistant_version_params, new_assistant_params
from runplane.stores.sqlite._codec import DECODERS, dump_json, row_to_run, row_to_thread
from runplane.stores.sqlite._connection import QUERIES, fetch_all
from runplane.stores.sqlite._transactions import Body, T, row

_ASSISTANT_SORT = {
    "assistant_id": "assistant_id",
    "graph_id": "lower(graph_id)",
    "name": "lower(name)",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_SEARCH_ASSISTANTS = {
    (sort_by, order): QUERIES["search_assistants"].replace(
        "{order}", f"{column} {order.upper()}, assistant_id {order.upper()}"
    )
    for sort_by, column in _ASSISTANT_SORT.items()
    for order in ("asc", "desc")
}


def row_to_assistant(row: sqlite3.Row) -> Assistant:
    return assistant_from_row(row, DECODERS)


def _visible(row: sqlite3.Row | None, owner: str) -> bool:
    return row is not None and (bool(row["system"]) or row["owner"] == owner)


class SqliteResources:
    """Assistants and thread TTLs; see `core.store.AssistantStore` and `ThreadLifecycleStore`."""

    if TYPE_CHECKING:

        def _session(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...
        def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...
        def _now(self) -> int: ...
        async def _read(self, body: Body[T]) -> T: ...
        async def _owned_thread(
            self, db: aiosqlite.Connection, thread_id: str, owner: str
        ) -> sqlite3.Row: ...

    @staticmethod
    async def _row(
        db: aiosqlite.Connection, name: str, params: dict[str, Any], sql: str | None = None
    ) -> Any:
        rows = await fetch_all(db, sql or QUERIES[name], params)
        return rows[0] if rows else None

    async def _visible_assistant(
        self, db: aiosqlite.Connection, assistant_id: str, owner: str
    ) -> sqlite3.Row:
        row = await self._row(db, "get_assistant", {"assistant_id": assistant_id})
        if not _visible(row, owner):
            raise NotFound(f"assistant {assistant_id} not found")
        return row  # type: ignore[no-any-return]

    async def _writable_assistant(
        self, db: aiosqlite.Connection, assistant_id: str, owner: str
    ) -> sqlite3.Row:
        row = await self._visible_assistant(db, assistant_id, owner)
        if row["owner"] != owner:
            raise shared_assistant(assistant_id)
        return row

    async def put_assistant(
        self, new: NewAssistant, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Assistant:
        params = new_assistant_params(new, dump_json)
        async with self._write() as db:
            existing = await self._row(db, "get_assistant", {"assistant_id": new.assistant_id})
            if existing is not None:
                if if_exists == "do_nothing" and _visible(existing, new.owner):
                    return row_to_assistant(existing)
                raise Conflict(f"Assistant {new.assistant_id} already exists")
            now = self._now()
            row = await self._row(db, "insert_assistant", {**params, "now": now})
            await fetch_all(db, QUERIES["insert_assistant_version"], {**params, "version": 1, "now": now})
        return row_to_assistant(row)

    async def get_assistant(self, assistant_id: str, owner: str) -> Assistant:
        # On every run's admission: one read in the group commit's next hop, not a hop of its own.
        found = await self._read(lambda conn: row(conn, "get_assistant", {"assistant_id": assistant_id}))
        if found is None or not _visible(found, owner):
            raise NotFound(f"assistant {assistant_id} not found")
        return row_to_assistant(found)

    async def patch_assistant(self, assistant_id: str, owner: str, patch: AssistantPatch) -> Assistant:
        async with self._write() as db:
            current = row_to_assistant(await self._writable_assistant(db, assistant_id, owner))
            number = (await self._row(db, "next_assistant_version", {"assistant_id": assistant_id}))[
                "version"
            ]
            version = patch_of(current, patch)
            params = {**assistant_version_params(version, dump_json), "version": number, "now": self._now()}
            await fetch_all(db, QUERIES["insert_assistant_version"], params)
            row = await self._row(db, "set_assistant_current", params)
        return row_to_assistant(row)

    async def delete_assistant(self, assistant_id: str, owner: str) -> list[Run]:
        async with self._write() as db:
            await self._writable_assistant(db, assistant_id, owner)
            runs = await fetch_all(db, QUERIES["active_runs_of_assistant"], {"assistant_id": assistant_id})
            await fetch_all(db, QUERIES["delete_assistant"], {"assistant_id": assistant_id})
        return [row_to_run(row) for row in runs]

    async def assistant_versions(
        self, assistant_id: str, owner: str, metadata: Json, limit: int, offset: int
    ) -> list[Assistant]:
        params = {
            "assistant_id": assistant_id,
            "metadata": dump_json(metadata) if metadata else None,
            "limit": limit,
            "offset": offset,
        }
        async with self._session() as db:
            await self._visible_assistant(db, assistant_id, owner)
            rows = await fetch_all(db, QUERIES["assistant_versions"], params)
        return [row_to_assistant(row) for row in rows]

    async def set_latest_assistant_version(self, assistant_id: str, owner: str, version: int) -> Assistant:
        async with self._write() as db:
            await self._writable_assistant(db, assistant_id, owner)
            chosen = await self._row(
                db, "get_assistant_version", {"assistant_id": assistant_id, "version": version}
            )
            if chosen is None:
                raise NotFound(f"Version {version} not found for assistant {assistant_id}")
            params = {**assistant_version_params(row_to_assistant(chosen), dump_json), "now": self._now()}
            row = await self._row(db, "set_assistant_current", params)
        return row_to_assistant(row)

    @staticmethod
    def _assistant_filter_params(owner: str, filter: AssistantFilter) -> dict[str, Any]:
        return {
            "owner": owner,
            "graph_id": filter.graph_id,
            "graph_ids": None if filter.graph_ids is None else orjson.dumps(list(filter.graph_ids)).decode(),
            "name": filter.name or None,
            "metadata": dump_json(filter.metadata) if filter.metadata else None,
        }

    async def search_assistants(self, owner: str, filter: AssistantFilter) -> list[Assistant]:
        sql = _SEARCH_ASSISTANTS.get((filter.sort_by, filter.sort_order))
        if sql is None:
            raise InvalidInput(f"cannot sort assistants by {filter.sort_by!r} {filter.sort_order!r}")
        params = {
            **self._assistant_filter_params(owner, filter),
            "limit": filter.limit,
            "offset": filter.offset,
        }
        async with self._session() as db:
            rows = await fetch_all(db, sql, params)
        return [row_to_assistant(row) for row in rows]

    async def count_assistants(self, owner: str, filter: AssistantFilter) -> int:
        async with self._session() as db:
            row = await self._row(db, "count_assistants", self._assistant_filter_params(owner, filter))
        return int(row[0])

    # -- thread TTLs ------------------------------------------------------------------------------

    async def set_thread_ttl(self, thread_id: str, owner: str, ttl: ThreadTtl | None) -> None:
        async with self._write() as db:
            await self._owned_thread(db, thread_id, owner)
            if ttl is None:
                await fetch_all(db, QUERIES["clear_thread_ttl"], {"thread_id": thread_id})
            else:
                params = {
                    "thread_id": thread_id,
                    "ttl_micros": round(ttl.minutes * 60_000_000),
                    "strategy": ttl.strategy,
                }
                await fetch_all(db, QUERIES["set_thread_ttl"], params)

    async def expired_threads(self, limit: int) -> list[Thread]:
        async with self._session() as db:
            rows = await fetch_all(db, QUERIES["expired_threads"], {"now": self._now(), "limit": limit})
        return [row_to_thread(row) for row in rows]

    async def delete_expired_thread(self, thread_id: str) -> bool:
        async with self._write() as db:
            if await self._row(db, "thread_expired", {"thread_id": thread_id, "now": self._now()}) is None:
                return False
            await fetch_all(db, QUERIES["delete_thread_runs"], {"thread_id": thread_id})
            await fetch_all(db, QUERIES["delete_thread"], {"thread_id": thread_id})
        return True
