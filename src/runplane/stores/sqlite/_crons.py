"""Crons and the webhook outbox of `SqliteStore` (a mixin: the store's plumbing, its queries)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import aiosqlite

from runplane.core.errors import Conflict, InvalidInput, NotFound, SlotTaken
from runplane.core.models import Cron, CronChanges, CronFilter, CronFire, NewCron, WebhookDelivery
from runplane.stores.sqlite._codec import (
    dump_json,
    from_micros,
    opt_micros,
    row_to_cron,
    row_to_delivery,
    to_micros,
)
from runplane.stores.sqlite._connection import QUERIES

_CRON_SORT_COLUMNS = (
    "cron_id", "assistant_id", "thread_id", "next_run_date", "end_time", "created_at", "updated_at"
)  # fmt: skip
# NULLs first ascending and last descending, as the in-memory reference sorts them.
_CRON_SEARCH_SQL = {
    (column, order): QUERIES["search_crons"].replace(
        "{order}",
        f"{column} {order.upper()} NULLS {'FIRST' if order == 'asc' else 'LAST'}, cron_id {order.upper()}",
    )
    for column in _CRON_SORT_COLUMNS
    for order in ("asc", "desc")
}


class SqliteCronsAndWebhooks:
    """The crons and outbox methods of `SqliteStore`; see `core.store.Store` for their contracts."""

    # Provided by SqliteStore.
    def _session(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    def _write(self) -> AbstractAsyncContextManager[aiosqlite.Connection]:
        raise NotImplementedError

    async def _all(
        self, db: aiosqlite.Connection, name: str, params: Mapping[str, Any], sql: str | None = None
    ) -> list[Any]:
        raise NotImplementedError

    async def _one(
        self, db: aiosqlite.Connection, name: str, params: Mapping[str, Any], sql: str | None = None
    ) -> sqlite3.Row | None:
        raise NotImplementedError

    def _now(self) -> int:
        raise NotImplementedError

    async def _owned_thread(self, db: aiosqlite.Connection, thread_id: str, owner: str) -> sqlite3.Row:
        raise NotImplementedError

    # -- crons ----------------------------------------------------------------------------------

    async def _owned_cron(self, db: aiosqlite.Connection, cron_id: str, owner: str) -> sqlite3.Row:
        row = await self._one(db, "get_cron", {"cron_id": cron_id})
        if row is None or row["owner"] != owner:
            raise NotFound(f"cron {cron_id} not found")
        return row

    async def create_cron(self, new: NewCron) -> Cron:
        params = {
            "cron_id": new.cron_id,
            "owner": new.owner,
            "assistant_id": new.assistant_id,
            "thread_id": new.thread_id,
            "schedule": new.schedule,
            "timezone": new.timezone,
            "end_time": opt_micros(new.end_time),
            "enabled": int(new.enabled),
            "on_run_completed": new.on_run_completed,
            "payload": dump_json(new.payload),
            "kwargs": dump_json(new.kwargs),
            "metadata": dump_json(new.metadata),
            "multitask_strategy": new.multitask_strategy,
            "next_run_date": opt_micros(new.next_run_date),
        }
        async with self._write() as db:
            if new.thread_id is not None:
                await self._owned_thread(db, new.thread_id, new.owner)
            if await self._one(db, "get_cron", {"cron_id": new.cron_id}) is not None:
                raise Conflict(f"cron {new.cron_id} already exists")
            row = await self._one(db, "insert_cron", {**params, "now": self._now()})
        assert row is not None
        return row_to_cron(row)

    async def get_cron(self, cron_id: str, owner: str) -> Cron:
        async with self._session() as db:
            return row_to_cron(await self._owned_cron(db, cron_id, owner))

    async def update_cron(self, cron_id: str, owner: str, changes: CronChanges) -> Cron:
        async with self._write() as db:
            cron = row_to_cron(await self._owned_cron(db, cron_id, owner))
            end_time = None if changes.clear_end_time else changes.end_time or cron.end_time
            params = {
                "cron_id": cron_id,
                "schedule": changes.schedule if changes.schedule is not None else cron.schedule,
                "timezone": changes.timezone if changes.timezone is not None else cron.timezone,
                "end_time": opt_micros(end_time),
                "enabled": int(changes.enabled if changes.enabled is not None else cron.enabled),
                "on_run_completed": changes.on_run_completed or cron.on_run_completed,
                "payload": dump_json(changes.payload if changes.payload is not None else cron.payload),
                "kwargs": dump_json(changes.kwargs if changes.kwargs is not None else cron.kwargs),
                "metadata": dump_json({**cron.metadata, **(changes.metadata or {})}),
                "next_run_date": opt_micros(
                    changes.next_run_date if changes.set_next_run_date else cron.next_run_date
                ),
                "now": self._now(),
            }
            row = await self._one(db, "update_cron", params)
        assert row is not None
        return row_to_cron(row)

    async def delete_cron(self, cron_id: str, owner: str) -> None:
        async with self._write() as db:
            await self._owned_cron(db, cron_id, owner)
            await self._all(db, "delete_cron", {"cron_id": cron_id})

    @staticmethod
    def _cron_filter_params(owner: str, filter: CronFilter) -> dict[str, Any]:
        return {
            "owner": owner,
            "assistant_id": filter.assistant_id,
            "thread_id": filter.thread_id,
            "enabled": None if filter.enabled is None else int(filter.enabled),
            "metadata": dump_json(filter.metadata) if filter.metadata else None,
        }

    async def search_crons(self, owner: str, filter: CronFilter) -> list[Cron]:
        sql = _CRON_SEARCH_SQL.get((filter.sort_by, filter.sort_order))
        if sql is None:
            raise InvalidInput(f"cannot sort crons by {filter.sort_by!r} {filter.sort_order!r}")
        params = {**self._cron_filter_params(owner, filter), "limit": filter.limit, "offset": filter.offset}
        async with self._session() as db:
            rows = await self._all(db, "search_crons", params, sql)
        return [row_to_cron(row) for row in rows]

    async def count_crons(self, owner: str, filter: CronFilter) -> int:
        async with self._session() as db:
            row = await self._one(db, "count_crons", self._cron_filter_params(owner, filter))
        assert row is not None
        return int(row[0])

    async def due_crons(self, now: datetime, limit: int = 100) -> list[Cron]:
        async with self._session() as db:
            rows = await self._all(db, "due_crons", {"now": to_micros(now), "limit": limit})
        return [row_to_cron(row) for row in rows]

    async def next_cron_slot(self) -> datetime | None:
        async with self._session() as db:
            row = await self._one(db, "next_cron_slot", {})
        return None if row is None or row["slot"] is None else from_micros(row["slot"])

    async def _claim_slot(self, db: aiosqlite.Connection, fire: CronFire) -> None:
        """Move the cron past `fire.slot` in the caller's transaction, or raise `SlotTaken`: the
        conditional update that lets exactly one scheduler fire a slot."""
        params = {
            "cron_id": fire.cron_id,
            "slot": to_micros(fire.slot),
            "next_run_date": opt_micros(fire.next_run_date),
            "now": self._now(),
        }
        if await self._one(db, "claim_cron_slot", params) is None:
            raise SlotTaken(f"cron {fire.cron_id} slot {fire.slot.isoformat()} is taken")

    async def skip_cron_slot(self, fire: CronFire) -> bool:
        params = {
            "cron_id": fire.cron_id,
            "slot": to_micros(fire.slot),
            "next_run_date": opt_micros(fire.next_run_date),
            "now": self._now(),
        }
        async with self._session() as db:  # one conditional UPDATE is atomic on its own
            return await self._one(db, "claim_cron_slot", params) is not None

    # -- webhook outbox -------------------------------------------------------------------------

    async def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[WebhookDelivery]:
        async with self._session() as db:  # look without the write lock: most looks find nothing
            if not await self._all(db, "due_webhooks", {"now": self._now(), "limit": 1}):
                return []
        async with self._write() as db:
            now = self._now()
            lease_until = now + int(lease_seconds * 1_000_000)
            claimed = []
            for due in await self._all(db, "due_webhooks", {"now": now, "limit": limit}):
                params = {"seq": due["seq"], "now": now, "lease_until": lease_until}
                row = await self._one(db, "claim_webhook", params)
                if row is not None:
                    claimed.append(row_to_delivery(row))
        return claimed

    async def webhook_delivered(self, delivery_id: str) -> None:
        async with self._session() as db:
            await self._all(db, "delete_webhook", {"delivery_id": delivery_id})

    async def webhook_failed(self, delivery_id: str, error: str, retry_at: datetime | None) -> None:
        params = {"delivery_id": delivery_id, "error": error, "retry_at": opt_micros(retry_at)}
        async with self._session() as db:
            await self._all(db, "fail_webhook", params)

    async def next_webhook_due(self) -> datetime | None:
        async with self._session() as db:
            row = await self._one(db, "next_webhook_due", {})
        return None if row is None or row["due"] is None else from_micros(row["due"])

    async def list_webhooks(self, limit: int = 100) -> list[WebhookDelivery]:
        async with self._session() as db:
            rows = await self._all(db, "list_webhooks", {"limit": limit})
        return [row_to_delivery(row) for row in rows]
