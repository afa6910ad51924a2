"""Rows to core records, and the two fetch helpers every query goes through."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow

from runplane.core.errors import LeaseLost
from runplane.core.models import Cron, Run, Thread, TokenUsage, WebhookDelivery

Conn = psycopg.AsyncConnection[DictRow]
Row = Mapping[str, Any]


# -- records ---------------------------------------------------------------------------------------


def _utc(value: datetime | None) -> datetime | None:
    # psycopg returns the session's time zone; the reference store hands out UTC instants.
    return value.astimezone(UTC) if value is not None else None


def _at(value: datetime) -> datetime:
    return value.astimezone(UTC)


def thread_from_row(row: Row) -> Thread:
    return Thread(
        thread_id=row["thread_id"],
        owner=row["owner"],
        status=row["status"],
        created_at=_at(row["created_at"]),
        updated_at=_at(row["updated_at"]),
        metadata=row["metadata"],
        values=row["state_values"],
        interrupts=row["interrupts"],
        config=row["config"],
        error=row["error"],
    )


def run_from_row(row: Row) -> Run:
    return Run(
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        assistant_id=row["assistant_id"],
        owner=row["owner"],
        status=row["status"],
        multitask_strategy=row["multitask_strategy"],
        created_at=_at(row["created_at"]),
        updated_at=_at(row["updated_at"]),
        metadata=row["metadata"],
        kwargs=row["kwargs"],
        not_before=_utc(row["not_before"]),
        started_at=_utc(row["started_at"]),
        ended_at=_utc(row["ended_at"]),
        error=row["error"],
        model_name=row["model_name"],
        usage=TokenUsage(row["input_tokens"], row["output_tokens"], row["total_tokens"]),
        attempt=row["attempt"],
        lease_owner=row["lease_owner"],
        lease_expires_at=_utc(row["lease_expires_at"]),
        cancel_action=row["cancel_action"],
        idempotency_key=row["idempotency_key"],
    )


def runs_in_order(rows: Iterable[Row]) -> list[Run]:
    return [run_from_row(row) for row in sorted(rows, key=lambda row: row["seq"])]


def usage_params(usage: TokenUsage | None) -> dict[str, int | None]:
    return {
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "total_tokens": usage.total_tokens if usage is not None else None,
    }


async def fetch_one(conn: Conn, query: str, /, **params: Any) -> DictRow | None:
    cursor = await conn.execute(query, params)
    return await cursor.fetchone()


async def fetch_all(conn: Conn, query: str, /, **params: Any) -> list[DictRow]:
    cursor = await conn.execute(query, params)
    return await cursor.fetchall()


def lease_lost(run_id: str, attempt: int) -> LeaseLost:
    return LeaseLost(f"run {run_id} attempt {attempt} no longer holds the lease")


def held_row(row: Row | None, run_id: str, attempt: int) -> Row:
    if row is None or row["status"] != "running" or row["attempt"] != attempt:
        raise lease_lost(run_id, attempt)
    return row


def cron_from_row(row: Row) -> Cron:
    return Cron(
        cron_id=row["cron_id"],
        owner=row["owner"],
        assistant_id=row["assistant_id"],
        thread_id=row["thread_id"],
        schedule=row["schedule"],
        timezone=row["timezone"],
        end_time=_utc(row["end_time"]),
        enabled=row["enabled"],
        on_run_completed=row["on_run_completed"],
        payload=row["payload"],
        kwargs=row["kwargs"],
        metadata=row["metadata"],
        multitask_strategy=row["multitask_strategy"],
        next_run_date=_utc(row["next_run_date"]),
        created_at=_at(row["created_at"]),
        updated_at=_at(row["updated_at"]),
    )


def delivery_from_row(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=row["delivery_id"],
        run_id=row["run_id"],
        url=row["url"],
        payload=row["payload"],
        attempts=row["attempts"],
        next_attempt_at=_at(row["next_attempt_at"]),
        created_at=_at(row["created_at"]),
        last_error=row["last_error"],
        status=row["status"],
    )
