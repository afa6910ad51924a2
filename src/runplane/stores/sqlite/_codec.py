"""Rows to records and back for the SQLite store: timestamps, JSON columns, database URLs.

Timestamps are stored as INTEGER microseconds since the Unix epoch: exact (a `datetime` has
microsecond resolution), ordered like the instants they encode, and compared by SQLite natively.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson

from runplane.core.errors import InvalidInput
from runplane.core.models import Cron, Json, Run, Thread, TokenUsage, WebhookDelivery

MEMORY = ":memory:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(value: datetime) -> int:
    """An instant as microseconds since the epoch; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND


def opt_micros(value: datetime | None) -> int | None:
    return None if value is None else to_micros(value)


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def opt_datetime(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def dump_json(value: Any) -> str:
    """JSON text for a JSON column.

    Raises:
        InvalidInput: the value is not JSON (a store must not keep what it cannot give back).
    """
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidInput(f"not JSON serializable: {exc}") from exc


def opt_json(value: Any | None) -> str | None:
    return None if value is None else dump_json(value)


def load_json(text: str) -> Any:
    return orjson.loads(text)


def usage_params(usage: TokenUsage | None) -> dict[str, int | None]:
    """Bind values for the three usage columns; all NULL keeps the stored usage."""
    if usage is None:
        return {"input_tokens": None, "output_tokens": None, "total_tokens": None}
    params: dict[str, int | None] = dict(usage.as_dict())
    return params


def row_to_run(row: sqlite3.Row) -> Run:
    return Run(
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        assistant_id=row["assistant_id"],
        owner=row["owner"],
        status=row["status"],
        multitask_strategy=row["multitask_strategy"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        metadata=load_json(row["metadata"]),
        kwargs=load_json(row["kwargs"]),
        not_before=opt_datetime(row["not_before"]),
        started_at=opt_datetime(row["started_at"]),
        ended_at=opt_datetime(row["ended_at"]),
        error=row["error"],
        model_name=row["model_name"],
        usage=TokenUsage(row["input_tokens"], row["output_tokens"], row["total_tokens"]),
        attempt=row["attempt"],
        lease_owner=row["lease_owner"],
        lease_expires_at=opt_datetime(row["lease_expires_at"]),
        cancel_action=row["cancel_action"],
        idempotency_key=row["idempotency_key"],
    )


def row_to_thread(row: sqlite3.Row) -> Thread:
    values = row["state_values"]
    return Thread(
        thread_id=row["thread_id"],
        owner=row["owner"],
        status=row["status"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        metadata=load_json(row["metadata"]),
        values=None if values is None else cast(Json, load_json(values)),
        interrupts=load_json(row["interrupts"]),
        config=load_json(row["config"]),
        error=row["error"],
    )


def metadata_matches(metadata: str, wanted: str) -> bool:
    """SQL function `runplane_metadata_matches`: the in-memory store's subset match, exactly.

    Done in Python rather than with `json_extract` so that equality is Python's (`1 == 1.0 == true`,
    nested objects compared whole, `null` distinct from a missing key), as in `InMemoryStore`.
    """
    have = orjson.loads(metadata)
    return all(key in have and have[key] == value for key, value in orjson.loads(wanted).items())


def path_from_url(url: str) -> str:
    """The database file of a `sqlite:` URL, or ":memory:".

    `sqlite:///relative.db` and `sqlite:///./dir/x.db` are relative to the working directory,
    `sqlite:////abs/path.db` is absolute, `sqlite:///:memory:`, `sqlite://:memory:` and `sqlite://`
    are an in-memory database. A driver suffix (`sqlite+aiosqlite:`) is accepted.

    Raises:
        InvalidInput: not a sqlite URL.
    """
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.split("+", 1)[0].lower() != "sqlite":
        raise InvalidInput(f"not a sqlite URL: {url!r}")
    if rest.startswith("//"):
        rest = rest[2:]
        if rest.startswith("/"):
            rest = rest[1:]
        elif rest and rest != MEMORY:
            # `sqlite://host/...`: SQLite has no hosts; refuse rather than guess.
            raise InvalidInput(f"sqlite URL {url!r} must look like sqlite:///path or sqlite:////abs/path")
    return rest or MEMORY


def row_to_cron(row: sqlite3.Row) -> Cron:
    return Cron(
        cron_id=row["cron_id"],
        owner=row["owner"],
        assistant_id=row["assistant_id"],
        thread_id=row["thread_id"],
        schedule=row["schedule"],
        timezone=row["timezone"],
        end_time=opt_datetime(row["end_time"]),
        enabled=bool(row["enabled"]),
        on_run_completed=row["on_run_completed"],
        payload=load_json(row["payload"]),
        kwargs=load_json(row["kwargs"]),
        metadata=load_json(row["metadata"]),
        multitask_strategy=row["multitask_strategy"],
        next_run_date=opt_datetime(row["next_run_date"]),
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
    )


def row_to_delivery(row: sqlite3.Row) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=row["delivery_id"],
        run_id=row["run_id"],
        url=row["url"],
        payload=load_json(row["payload"]),
        attempts=row["attempts"],
        next_attempt_at=from_micros(row["next_attempt_at"]),
        created_at=from_micros(row["created_at"]),
        last_error=row["last_error"],
        status=row["status"],
    )
