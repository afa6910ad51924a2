"""Rows to core records, and the two fetch helpers every query goes through."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow

from runplane.core.errors import LeaseLost
from runplane.core.graphs import Assistant
from runplane.core.models import Cron, Run, Thread, WebhookDelivery
from runplane.stores import _rows as shared
from runplane.stores._rows import Decoders
from runplane.stores._rows import usage_params as usage_params

Conn = psycopg.AsyncConnection[DictRow]
Row = Mapping[str, Any]


# -- records ---------------------------------------------------------------------------------------


def _at(value: datetime) -> datetime:
    # psycopg returns the session's time zone; the reference store hands out UTC instants.
    return value.astimezone(UTC)


def _parsed(value: Any) -> Any:
    return value  # psycopg parses jsonb


#: How PostgreSQL's columns decode: timestamptz in the session's zone, parsed jsonb.
DECODERS = Decoders(instant=_at, json=_parsed)


def run_from_row(row: Row) -> Run:
    return shared.run_from_row(row, DECODERS)


def thread_from_row(row: Row) -> Thread:
    return shared.thread_from_row(row, DECODERS)


def cron_from_row(row: Row) -> Cron:
    return shared.cron_from_row(row, DECODERS)


def delivery_from_row(row: Row) -> WebhookDelivery:
    return shared.delivery_from_row(row, DECODERS)


def assistant_from_row(row: Row) -> Assistant:
    return shared.assistant_from_row(row, DECODERS)


def runs_in_order(rows: Iterable[Row]) -> list[Run]:
    return [run_from_row(row) for row in sorted(rows, key=lambda row: row["seq"])]


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
