"""Crons and the webhook outbox of `PostgresStore` (a mixin: the store's pool, its queries)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

from runplane.core.errors import Conflict, NotFound
from runplane.core.models import Cron, CronChanges, CronFilter, CronFire, NewCron, WebhookDelivery
from runplane.stores.postgres._base import QUERIES, PostgresBase
from runplane.stores.postgres._rows import Conn, cron_from_row, delivery_from_row, fetch_all, fetch_one

T = TypeVar("T")

_SORT_COLUMNS = {
    "cron_id": 'cron_id COLLATE "C"',
    "assistant_id": 'assistant_id COLLATE "C"',
    "thread_id": 'thread_id COLLATE "C"',
    "next_run_date": "next_run_date",
    "end_time": "end_time",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
# NULLs first ascending and last descending, as the in-memory reference sorts them.
_SEARCH_QUERIES = {
    (sort_by, order): QUERIES["search_crons"].replace(
        "__ORDER_BY__",
        f"{column} {order.upper()} NULLS {'FIRST' if order == 'asc' else 'LAST'}, "
        f'cron_id COLLATE "C" {order.upper()}',
    )
    for (sort_by, column), order in itertools.product(_SORT_COLUMNS.items(), ("asc", "desc"))
}


async def lock_cron_slot(conn: Conn, fire: CronFire, now: datetime) -> bool:
    """Claim `fire.slot` inside the caller's transaction: lock the cron while it still waits for
    that slot (skipping a cron another scheduler holds) and move it to its next slot."""
    row = await fetch_one(conn, QUERIES["lock_cron_slot"], cron_id=fire.cron_id, slot=fire.slot)
    if row is None:
        return False
    await conn.execute(
        QUERIES["move_cron_slot"],
        {"cron_id": fire.cron_id, "next_run_date": fire.next_run_date, "now": now},
    )
    return True


def _filter_params(owner: str, filter: CronFilter) -> dict[str, Any]:
    return {
        "owner": owner,
        "assistant_id": filter.assistant_id,
        "thread_id": filter.thread_id,
        "enabled": filter.enabled,
        "metadata": Jsonb(filter.metadata),
    }


class PostgresCronsAndWebhooks(PostgresBase):
    """The crons and outbox methods of `PostgresStore`; see `core.store.Store` for their contracts."""

    # -- crons ----------------------------------------------------------------------------------

    async def create_cron(self, new: NewCron) -> Cron:
        async def body(conn: Conn) -> Cron:
            if new.thread_id is not None:
                thread = await fetch_one(conn, QUERIES["get_thread"], thread_id=new.thread_id)
                if thread is None or thread["owner"] != new.owner:
                    raise NotFound(f"thread {new.thread_id} not found")
            row = await fetch_one(
                conn,
                QUERIES["insert_cron"],
                cron_id=new.cron_id,
                owner=new.owner,
                assistant_id=new.assistant_id,
                thread_id=new.thread_id,
                schedule=new.schedule,
                timezone=new.timezone,
                end_time=new.end_time,
                enabled=new.enabled,
                on_run_completed=new.on_run_completed,
                payload=Jsonb(new.payload),
                kwargs=Jsonb(new.kwargs),
                metadata=Jsonb(new.metadata),
                multitask_strategy=new.multitask_strategy,
                next_run_date=new.next_run_date,
                now=self._clock.now(),
            )
            if row is None:
                raise Conflict(f"cron {new.cron_id} already exists")
            return cron_from_row(row)

        return await self._transaction(body)

    async def get_cron(self, cron_id: str, owner: str) -> Cron:
        async with self._connection() as conn:
            row = await fetch_one(conn, QUERIES["get_cron"], cron_id=cron_id)
        if row is None or row["owner"] != owner:
            raise NotFound(f"cron {cron_id} not found")
        return cron_from_row(row)

    async def update_cron(self, cron_id: str, owner: str, changes: CronChanges) -> Cron:
        async def body(conn: Conn) -> Cron:
            row = await fetch_one(conn, QUERIES["lock_cron"], cron_id=cron_id)
            if row is None or row["owner"] != owner:
                raise NotFound(f"cron {cron_id} not found")
            cron = cron_from_row(row)
            updated = await fetch_one(
                conn,
                QUERIES["update_cron"],
                cron_id=cron_id,
                schedule=changes.schedule if changes.schedule is not None else cron.schedule,
                timezone=changes.timezone if changes.timezone is not None else cron.timezone,
                end_time=None if changes.clear_end_time else changes.end_time or cron.end_time,
                enabled=changes.enabled if changes.enabled is not None else cron.enabled,
                on_run_completed=changes.on_run_completed or cron.on_run_completed,
                payload=Jsonb(changes.payload if changes.payload is not None else cron.payload),
                kwargs=Jsonb(changes.kwargs if changes.kwargs is not None else cron.kwargs),
                metadata=Jsonb({**cron.metadata, **(changes.metadata or {})}),
                next_run_date=changes.next_run_date if changes.set_next_run_date else cron.next_run_date,
                now=self._clock.now(),
            )
            assert updated is not None  # locked
            return cron_from_row(updated)

        return await self._transaction(body)

    async def delete_cron(self, cron_id: str, owner: str) -> None:
        async with self._connection() as conn:
            row = await fetch_one(conn, QUERIES["delete_cron"], cron_id=cron_id, owner=owner)
        if row is None:
            raise NotFound(f"cron {cron_id} not found")

    async def search_crons(self, owner: str, filter: CronFilter) -> list[Cron]:
        query = _SEARCH_QUERIES[filter.sort_by, filter.sort_order]
        async with self._connection() as conn:
            rows = await fetch_all(
                conn, query, limit=filter.limit, offset=filter.offset, **_filter_params(owner, filter)
            )
        return [cron_from_row(row) for row in rows]

    async def count_crons(self, owner: str, filter: CronFilter) -> int:
        async with self._connection() as conn:
            row = await fetch_one(conn, QUERIES["count_crons"], **_filter_params(owner, filter))
        assert row is not None
        return int(row["n"])

    async def due_crons(self, now: datetime, limit: int = 100) -> list[Cron]:
        async with self._connection() as conn:
            rows = await fetch_all(conn, QUERIES["due_crons"], now=now, limit=limit)
        return [cron_from_row(row) for row in rows]

    async def next_cron_slot(self) -> datetime | None:
        async with self._connection() as conn:
            row = await fetch_one(conn, QUERIES["next_cron_slot"])
        slot: datetime | None = None if row is None else row["slot"]
        return None if slot is None else slot.astimezone(UTC)

    async def skip_cron_slot(self, fire: CronFire) -> bool:
        return await self._transaction(lambda conn: lock_cron_slot(conn, fire, self._clock.now()))

    # -- webhook outbox -------------------------------------------------------------------------

    async def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[WebhookDelivery]:
        now = self._clock.now()
        async with self._connection() as conn:
            rows = await fetch_all(
                conn,
                QUERIES["claim_webhooks"],
                now=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                limit=limit,
            )
        rows.sort(key=lambda row: (row["next_attempt_at"], row["seq"]))
        return [delivery_from_row(row) for row in rows]

    async def webhook_delivered(self, delivery_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute(QUERIES["delete_webhook"], {"delivery_id": delivery_id})

    async def webhook_failed(self, delivery_id: str, error: str, retry_at: datetime | None) -> None:
        async with self._connection() as conn:
            await conn.execute(
                QUERIES["fail_webhook"], {"delivery_id": delivery_id, "error": error, "retry_at": retry_at}
            )

    async def next_webhook_due(self) -> datetime | None:
        async with self._connection() as conn:
            row = await fetch_one(conn, QUERIES["next_webhook_due"])
        due: datetime | None = None if row is None else row["due"]
        return None if due is None else due.astimezone(UTC)

    async def list_webhooks(self, limit: int = 100) -> list[WebhookDelivery]:
        async with self._connection() as conn:
            rows = await fetch_all(conn, QUERIES["list_webhooks"], limit=limit)
        return [delivery_from_row(row) for row in rows]
