"""`PostgresStore`'s threads: create, read, search, update, delete."""

from __future__ import annotations

import itertools
import uuid
from typing import Any, Literal

from psycopg.types.json import Jsonb

from runplane.core.errors import Conflict, NotFound
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    Json,
    NewThread,
    Run,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
)
from runplane.stores.postgres._base import QUERIES, PostgresBase, every, execute, one
from runplane.stores.postgres._rows import Conn, fetch_all, runs_in_order, thread_from_row

#: The whitelisted ORDER BY clauses of `search_threads`: text sorts use code points, as Python does.
_SORT_COLUMNS = {
    "thread_id": 'thread_id COLLATE "C"',
    "status": 'status COLLATE "C"',
    "created_at": "created_at",
    "updated_at": "updated_at",
}
_SEARCH_QUERIES = {
    (sort_by, order): QUERIES["search_threads"].replace(
        "__ORDER_BY__", f'{column} {order.upper()}, thread_id COLLATE "C" {order.upper()}'
    )
    for (sort_by, column), order in itertools.product(_SORT_COLUMNS.items(), ("asc", "desc"))
}


def _filter_params(owner: str, filter: ThreadFilter) -> dict[str, Any]:
    return {
        "owner": owner,
        "ids": list(filter.ids) if filter.ids is not None else None,
        "status": filter.status,
        "metadata": Jsonb(filter.metadata),
    }


class PostgresThreads(PostgresBase):
    """Threads; see `core.store.Store` for the contracts."""

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        thread_id = new.thread_id or str(uuid.uuid4())

        params = {"thread_id": thread_id, "owner": new.owner, "now": self._clock.now()}
        # One statement, no transaction: the insert is atomic, and the read after a conflict only
        # tells who won.
        async with self._connection() as conn:
            row = await one(conn, "insert_thread", metadata=Jsonb(new.metadata), **params)
            if row is not None:
                return thread_from_row(row)
            existing = await one(conn, "get_thread", thread_id=thread_id)
        if existing is not None and if_exists == "do_nothing" and existing["owner"] == new.owner:
            return thread_from_row(existing)
        raise Conflict(f"thread {thread_id} already exists")

    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        async with self._connection() as conn:
            return thread_from_row(await self._owned_thread(conn, thread_id, owner))

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        async with self._connection() as conn:
            row = await one(
                conn,
                "update_thread_metadata",
                thread_id=thread_id,
                owner=owner,
                metadata=Jsonb(metadata),
                now=self._clock.now(),
            )
        if row is None:
            raise NotFound(f"thread {thread_id} not found")
        return thread_from_row(row)

    async def set_thread_state(
        self,
        thread_id: str,
        owner: str,
        values: Json | None,
        interrupts: Json,
        status: ThreadStatus | None = None,
    ) -> Thread:
        async def body(conn: Conn) -> Thread:
            # Locked first: the next statement then sees every run admitted before it.
            await self._lock_owned_thread(conn, thread_id, owner)
            row = await one(
                conn,
                "set_thread_state",
                thread_id=thread_id,
                values=Jsonb(values) if values is not None else None,
                interrupts=Jsonb(interrupts),
                status=status,
                now=self._clock.now(),
            )
            assert row is not None  # the thread is locked
            return thread_from_row(row)

        return await self._transaction(body)

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        async def body(conn: Conn) -> list[Run]:
            await self._lock_owned_thread(conn, thread_id, owner)
            runs = runs_in_order(await every(conn, "delete_thread_runs", thread_id=thread_id))
            await execute(conn, "delete_thread", thread_id=thread_id)
            return [run for run in runs if run.status in ACTIVE_RUN_STATUSES]

        return await self._transaction(body)

    async def search_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]:
        query = _SEARCH_QUERIES[filter.sort_by, filter.sort_order]
        async with self._connection() as conn:
            rows = await fetch_all(
                conn, query, limit=filter.limit, offset=filter.offset, **_filter_params(owner, filter)
            )
        return [thread_from_row(row) for row in rows]

    async def count_threads(self, owner: str, filter: ThreadFilter) -> int:
        async with self._connection() as conn:
            row = await one(conn, "count_threads", **_filter_params(owner, filter))
        assert row is not None
        return int(row["n"])

    async def thread_usage(self, thread_id: str, owner: str) -> TokenUsage:
        async with self._connection() as conn:
            await self._owned_thread(conn, thread_id, owner)
            row = await one(conn, "thread_usage", thread_id=thread_id)
        assert row is not None
        return TokenUsage(int(row["input_tokens"]), int(row["output_tokens"]), int(row["total_tokens"]))
