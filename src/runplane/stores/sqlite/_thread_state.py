"""State-update holds of `SqliteStore` (a mixin: the store's connection, its own queries).

The hold is two columns of the thread row (migration 0016), written under `BEGIN IMMEDIATE`, the
lock every admission takes too: an update and an admission of any process serialize on it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import aiosqlite

from runplane.core.errors import LeaseLost
from runplane.core.lifecycle import check_not_reserved, reserve_plan
from runplane.core.models import Thread, ThreadStateWrite
from runplane.db.sql import load_queries
from runplane.stores.sqlite._codec import dump_json, from_micros, opt_json, row_to_thread, to_micros

QUERIES = load_queries("runplane.stores.sqlite", "thread_state.sql")


def held_until(thread: sqlite3.Row) -> datetime | None:
    """When the state update holding `thread` (a `threads` row) lets go, if one does."""
    until = thread["reserved_until"]
    return None if until is None else from_micros(until)


def check_thread_free(thread: sqlite3.Row, now: int) -> None:
    """Called by `create_run` inside its write transaction, on the thread row it read."""
    check_not_reserved(thread["thread_id"], held_until(thread), from_micros(now))


class SqliteThreadState:
    """`reserve_thread` and `release_thread` of `SqliteStore`; see `core.store.Store`."""

    # Provided by SqliteStore.
    def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _one(
        self, db: aiosqlite.Connection, name: str, params: Mapping[str, Any], sql: str | None = None
    ) -> sqlite3.Row | None:
        raise NotImplementedError

    def _now(self) -> int:
        raise NotImplementedError

    async def _owned_thread(self, db: aiosqlite.Connection, thread_id: str, owner: str) -> sqlite3.Row:
        raise NotImplementedError

    async def reserve_thread(self, thread_id: str, owner: str, token: str, seconds: float) -> Thread:
        async with self._write() as db:
            thread = await self._owned_thread(db, thread_id, owner)
            now = self._now()
            probe = await self._one(db, "", {"thread_id": thread_id}, QUERIES["thread_has_active_run"])
            reserve_plan(bool(probe and probe["active"]), held_until(thread), from_micros(now))
            until = to_micros(from_micros(now) + timedelta(seconds=seconds))
            params = {"thread_id": thread_id, "token": token, "until": until}
            row = await self._one(db, "", params, QUERIES["reserve_thread"])
        assert row is not None
        return row_to_thread(row)

    async def release_thread(
        self, thread_id: str, token: str, state: ThreadStateWrite | None = None
    ) -> Thread | None:
        async with self._write() as db:
            if state is None:
                row = await self._one(
                    db, "", {"thread_id": thread_id, "token": token}, QUERIES["release_thread"]
                )
            else:
                params = {
                    "thread_id": thread_id,
                    "token": token,
                    "values": opt_json(state.values),
                    "interrupts": dump_json(state.interrupts),
                    "status": state.status,
                    "now": self._now(),
                }
                row = await self._one(db, "", params, QUERIES["release_thread_with_state"])
            if row is None:
                row = await self._one(db, "get_thread", {"thread_id": thread_id})
                if row is not None and state is not None:
                    raise LeaseLost(f"thread {thread_id}: the state update's hold expired and was taken over")
        return None if row is None else row_to_thread(row)
