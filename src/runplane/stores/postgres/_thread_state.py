"""State-update holds of `PostgresStore` (a mixin: the store's pool, its own queries).

The hold is two columns of the thread row (migration 0016), written under the row lock every
admission takes too (`lock_thread ... FOR UPDATE`): an update and an admission of any process
serialize on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

from runplane.core.errors import LeaseLost, NotFound
from runplane.core.lifecycle import check_not_reserved, reserve_plan
from runplane.core.models import Thread, ThreadStateWrite
from runplane.db.sql import load_queries
from runplane.stores.postgres._base import PostgresBase
from runplane.stores.postgres._rows import Conn, fetch_one, thread_from_row

T = TypeVar("T")

QUERIES = load_queries("runplane.stores.postgres", "thread_state.sql")


def check_thread_free(thread: Mapping[str, Any], now: datetime) -> None:
    """Called by `create_run` inside its transaction, on the thread row it locked."""
    check_not_reserved(thread["thread_id"], thread["reserved_until"], now)


class PostgresThreadState(PostgresBase):
    """`reserve_thread` and `release_thread` of `PostgresStore`; see `core.store.Store`."""

    async def reserve_thread(self, thread_id: str, owner: str, token: str, seconds: float) -> Thread:
        async def body(conn: Conn) -> Thread:
            thread = await fetch_one(conn, QUERIES["lock_owned_thread"], thread_id=thread_id)
            if thread is None or thread["owner"] != owner:
                raise NotFound(f"thread {thread_id} not found")
            now = self._clock.now()
            probe = await fetch_one(conn, QUERIES["thread_has_active_run"], thread_id=thread_id)
            reserve_plan(bool(probe and probe["active"]), thread["reserved_until"], now)
            row = await fetch_one(
                conn,
                QUERIES["reserve_thread"],
                thread_id=thread_id,
                token=token,
                until=now + timedelta(seconds=seconds),
            )
            assert row is not None
            return thread_from_row(row)

        return await self._transaction(body)

    async def release_thread(
        self, thread_id: str, token: str, state: ThreadStateWrite | None = None
    ) -> Thread | None:
        async def body(conn: Conn) -> Thread | None:
            if state is None:
                row = await fetch_one(conn, QUERIES["release_thread"], thread_id=thread_id, token=token)
            else:
                row = await fetch_one(
                    conn,
                    QUERIES["release_thread_with_state"],
                    thread_id=thread_id,
                    token=token,
                    values=None if state.values is None else Jsonb(state.values),
                    interrupts=Jsonb(state.interrupts),
                    status=state.status,
                    now=self._clock.now(),
                )
            if row is None:
                row = await fetch_one(conn, QUERIES["get_thread"], thread_id=thread_id)
                if row is not None and state is not None:
                    raise LeaseLost(f"thread {thread_id}: the state update's hold expired and was taken over")
            return None if row is None else thread_from_row(row)

        return await self._transaction(body)
