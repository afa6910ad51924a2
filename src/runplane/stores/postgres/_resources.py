"""`PostgresStore`'s assistants (with immutable versions) and thread TTLs.

The same semantics as `InMemoryStore` (see `stores/_memory_resources.py`). Versions are numbered
under the assistant's row lock; a TTL deletion re-checks expiry under the thread's row lock, so a
run admitted meanwhile (which takes the same lock) keeps its thread.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

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
from runplane.stores._rows import assistant_version_params, new_assistant_params
from runplane.stores.postgres._base import QUERIES, PostgresBase, every, one
from runplane.stores.postgres._rows import (
    Conn,
    Row,
    assistant_from_row,
    fetch_all,
    runs_in_order,
    thread_from_row,
)

if TYPE_CHECKING:
    pass

T = TypeVar("T")

_ASSISTANT_SORT = {
    "assistant_id": 'assistant_id COLLATE "C"',
    "graph_id": 'lower(graph_id) COLLATE "C"',
    "name": 'lower(name) COLLATE "C"',
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_SEARCH_ASSISTANTS = {
    (sort_by, order): QUERIES["search_assistants"].replace(
        "__ORDER_BY__", f'{column} {order.upper()}, assistant_id COLLATE "C" {order.upper()}'
    )
    for (sort_by, column), order in itertools.product(_ASSISTANT_SORT.items(), ("asc", "desc"))
}


def _visible(row: Row | None, owner: str) -> bool:
    return row is not None and (bool(row["system"]) or row["owner"] == owner)


class PostgresResources(PostgresBase):
    """Assistants and thread TTLs; see `core.store.AssistantStore` and `ThreadLifecycleStore`."""

    @staticmethod
    async def _visible_assistant(conn: Conn, assistant_id: str, owner: str, *, lock: bool = False) -> DictRow:
        row = await one(conn, "lock_assistant" if lock else "get_assistant", assistant_id=assistant_id)
        if row is None or not _visible(row, owner):
            raise NotFound(f"assistant {assistant_id} not found")
        return row

    async def _writable_assistant(self, conn: Conn, assistant_id: str, owner: str) -> DictRow:
        row = await self._visible_assistant(conn, assistant_id, owner, lock=True)
        if row["owner"] != owner:
            raise shared_assistant(assistant_id)
        return row

    async def put_assistant(
        self, new: NewAssistant, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Assistant:
        params = new_assistant_params(new, Jsonb)

        async def body(conn: Conn) -> Assistant:
            now = self._clock.now()
            row = await one(conn, "insert_assistant", now=now, **params)
            if row is not None:
                await conn.execute(QUERIES["insert_assistant_version"], {**params, "version": 1, "now": now})
                return assistant_from_row(row)
            existing = await one(conn, "get_assistant", assistant_id=new.assistant_id)
            if existing is not None and if_exists == "do_nothing" and _visible(existing, new.owner):
                return assistant_from_row(existing)
            raise Conflict(f"Assistant {new.assistant_id} already exists")

        return await self._transaction(body)

    async def get_assistant(self, assistant_id: str, owner: str) -> Assistant:
        async with self._connection() as conn:
            return assistant_from_row(await self._visible_assistant(conn, assistant_id, owner))

    async def patch_assistant(self, assistant_id: str, owner: str, patch: AssistantPatch) -> Assistant:
        async def body(conn: Conn) -> Assistant:
            current = assistant_from_row(await self._writable_assistant(conn, assistant_id, owner))
            number = await one(conn, "next_assistant_version", assistant_id=assistant_id)
            assert number is not None
            params = {
                **assistant_version_params(patch_of(current, patch), Jsonb),
                "version": number["version"],
                "now": self._clock.now(),
            }
            await conn.execute(QUERIES["insert_assistant_version"], params)
            row = await one(conn, "set_assistant_current", **params)
            assert row is not None
            return assistant_from_row(row)

        return await self._transaction(body)

    async def delete_assistant(self, assistant_id: str, owner: str) -> list[Run]:
        async def body(conn: Conn) -> list[Run]:
            await self._writable_assistant(conn, assistant_id, owner)
            runs = runs_in_order(await every(conn, "active_runs_of_assistant", assistant_id=assistant_id))
            await conn.execute(QUERIES["delete_assistant"], {"assistant_id": assistant_id})
            return runs

        return await self._transaction(body)

    async def assistant_versions(
        self, assistant_id: str, owner: str, metadata: Json, limit: int, offset: int
    ) -> list[Assistant]:
        async with self._connection() as conn:
            await self._visible_assistant(conn, assistant_id, owner)
            rows = await every(
                conn,
                "assistant_versions",
                assistant_id=assistant_id,
                metadata=Jsonb(metadata or {}),
                limit=limit,
                offset=offset,
            )
        return [assistant_from_row(row) for row in rows]

    async def set_latest_assistant_version(self, assistant_id: str, owner: str, version: int) -> Assistant:
        async def body(conn: Conn) -> Assistant:
            await self._writable_assistant(conn, assistant_id, owner)
            chosen = await one(conn, "get_assistant_version", assistant_id=assistant_id, version=version)
            if chosen is None:
                raise NotFound(f"Version {version} not found for assistant {assistant_id}")
            params = {**assistant_version_params(assistant_from_row(chosen), Jsonb), "now": self._clock.now()}
            row = await one(conn, "set_assistant_current", **params)
            assert row is not None
            return assistant_from_row(row)

        return await self._transaction(body)

    @staticmethod
    def _assistant_filter_params(owner: str, filter: AssistantFilter) -> dict[str, Any]:
        return {
            "owner": owner,
            "graph_id": filter.graph_id,
            "graph_ids": list(filter.graph_ids) if filter.graph_ids is not None else None,
            "name": filter.name or None,
            "metadata": Jsonb(filter.metadata or {}),
        }

    async def search_assistants(self, owner: str, filter: AssistantFilter) -> list[Assistant]:
        query = _SEARCH_ASSISTANTS.get((filter.sort_by, filter.sort_order))
        if query is None:
            raise InvalidInput(f"cannot sort assistants by {filter.sort_by!r} {filter.sort_order!r}")
        params = self._assistant_filter_params(owner, filter)
        async with self._connection() as conn:
            rows = await fetch_all(conn, query, limit=filter.limit, offset=filter.offset, **params)
        return [assistant_from_row(row) for row in rows]

    async def count_assistants(self, owner: str, filter: AssistantFilter) -> int:
        async with self._connection() as conn:
            row = await one(conn, "count_assistants", **self._assistant_filter_params(owner, filter))
        assert row is not None
        return int(row["count"])

    # -- thread TTLs ------------------------------------------------------------------------------

    async def set_thread_ttl(self, thread_id: str, owner: str, ttl: ThreadTtl | None) -> None:
        async def body(conn: Conn) -> None:
            await self._lock_owned_thread(conn, thread_id, owner)
            if ttl is None:
                await conn.execute(QUERIES["clear_thread_ttl"], {"thread_id": thread_id})
            else:
                params = {"thread_id": thread_id, "seconds": ttl.minutes * 60, "strategy": ttl.strategy}
                await conn.execute(QUERIES["set_thread_ttl"], params)

        await self._transaction(body)

    async def expired_threads(self, limit: int) -> list[Thread]:
        async with self._connection() as conn:
            rows = await every(conn, "expired_threads", now=self._clock.now(), limit=limit)
        return [thread_from_row(row) for row in rows]

    async def delete_expired_thread(self, thread_id: str) -> bool:
        async def body(conn: Conn) -> bool:
            if await one(conn, "lock_thread", thread_id=thread_id) is None:
                return False
            if await one(conn, "thread_expired", thread_id=thread_id, now=self._clock.now()) is None:
                return False
            await conn.execute(QUERIES["delete_thread_runs"], {"thread_id": thread_id})
            await conn.execute(QUERIES["delete_thread"], {"thread_id": thread_id})
            return True

        return await self._transaction(body)
