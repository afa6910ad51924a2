"""Rows to records and back for the SQLite store: timestamps, JSON columns, database URLs (the
columns-to-fields mapping is `stores/_rows.py`, shared with PostgreSQL).

Timestamps are stored as INTEGER microseconds since the Unix epoch: exact (a `datetime` has
microsecond resolution), ordered like the instants they encode, and compared by SQLite natively.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from runplane.core.errors import InvalidInput
from runplane.core.models import Cron, Run, Thread, WebhookDelivery
from runplane.stores._rows import (
    Decoders,
    Row,
    cron_from_row,
    delivery_from_row,
    run_from_row,
    thread_from_row,
)
from runplane.stores._rows import usage_params as usage_params

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


#: How SQLite's columns decode: integer microseconds, JSON text.
DECODERS = Decoders(instant=from_micros, json=load_json)


def row_to_run(row: Row) -> Run:
    return run_from_row(row, DECODERS)


def row_to_thread(row: Row) -> Thread:
    return thread_from_row(row, DECODERS)


def row_to_cron(row: Row) -> Cron:
    return cron_from_row(row, DECODERS)


def row_to_delivery(row: Row) -> WebhookDelivery:
    return delivery_from_row(row, DECODERS)


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
