"""Rows to core records for both SQL stores: one mapping of columns to fields.

The stores keep the same columns and differ only in how a column decodes: PostgreSQL hands out
`datetime`s and parsed JSON, SQLite integer microseconds and JSON text. Each gives its `Decoders`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from runplane.core.graphs import Assistant
from runplane.core.models import Cron, NewAssistant, Run, Thread, TokenUsage, WebhookDelivery


class Row(Protocol):
    """A result row read by column name: a `dict` (psycopg) or an `sqlite3.Row`."""

    def __getitem__(self, key: str, /) -> Any: ...
    def keys(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Decoders:
    """How one store's columns decode."""

    #: A NOT NULL timestamp column to an aware UTC `datetime`.
    instant: Callable[[Any], datetime]
    #: A NOT NULL JSON column to its value.
    json: Callable[[Any], Any]

    def opt_instant(self, value: Any) -> datetime | None:
        return None if value is None else self.instant(value)

    def opt_json(self, value: Any) -> Any:
        return None if value is None else self.json(value)


def run_from_row(row: Row, d: Decoders) -> Run:
    return Run(
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        assistant_id=row["assistant_id"],
        owner=row["owner"],
        status=row["status"],
        multitask_strategy=row["multitask_strategy"],
        created_at=d.instant(row["created_at"]),
        updated_at=d.instant(row["updated_at"]),
        metadata=d.json(row["metadata"]),
        kwargs=d.json(row["kwargs"]),
        not_before=d.opt_instant(row["not_before"]),
        started_at=d.opt_instant(row["started_at"]),
        ended_at=d.opt_instant(row["ended_at"]),
        error=row["error"],
        model_name=row["model_name"],
        usage=TokenUsage(row["input_tokens"], row["output_tokens"], row["total_tokens"]),
        attempt=row["attempt"],
        lease_owner=row["lease_owner"],
        lease_expires_at=d.opt_instant(row["lease_expires_at"]),
        cancel_action=row["cancel_action"],
        idempotency_key=row["idempotency_key"],
    )


def thread_from_row(row: Row, d: Decoders) -> Thread:
    return Thread(
        thread_id=row["thread_id"],
        owner=row["owner"],
        status=row["status"],
        created_at=d.instant(row["created_at"]),
        updated_at=d.instant(row["updated_at"]),
        metadata=d.json(row["metadata"]),
        values=d.opt_json(row["state_values"]),
        interrupts=d.json(row["interrupts"]),
        config=d.json(row["config"]),
        error=row["error"],
    )


def cron_from_row(row: Row, d: Decoders) -> Cron:
    return Cron(
        cron_id=row["cron_id"],
        owner=row["owner"],
        assistant_id=row["assistant_id"],
        thread_id=row["thread_id"],
        schedule=row["schedule"],
        timezone=row["timezone"],
        end_time=d.opt_instant(row["end_time"]),
        enabled=bool(row["enabled"]),
        on_run_completed=row["on_run_completed"],
        payload=d.json(row["payload"]),
        kwargs=d.json(row["kwargs"]),
        metadata=d.json(row["metadata"]),
        multitask_strategy=row["multitask_strategy"],
        next_run_date=d.opt_instant(row["next_run_date"]),
        created_at=d.instant(row["created_at"]),
        updated_at=d.instant(row["updated_at"]),
    )


def delivery_from_row(row: Row, d: Decoders) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=row["delivery_id"],
        run_id=row["run_id"],
        url=row["url"],
        payload=d.json(row["payload"]),
        attempts=row["attempts"],
        next_attempt_at=d.instant(row["next_attempt_at"]),
        created_at=d.instant(row["created_at"]),
        last_error=row["last_error"],
        status=row["status"],
    )


def assistant_from_row(row: Row, d: Decoders) -> Assistant:
    """An assistant, or one of its versions (no `updated_at` column: the version's time for both)."""
    created_at = d.instant(row["created_at"])
    return Assistant(
        assistant_id=row["assistant_id"],
        graph_id=row["graph_id"],
        name=row["name"],
        created_at=created_at,
        updated_at=d.instant(row["updated_at"]) if "updated_at" in row.keys() else created_at,
        config=d.json(row["config"]),
        context=d.json(row["context"]),
        metadata=d.json(row["metadata"]),
        version=row["version"],
        description=row["description"],
    )


def new_assistant_params(new: NewAssistant, json: Callable[[Any], Any]) -> dict[str, Any]:
    """Bind values of a new `assistants` row (and its first version); `json` encodes a JSON column."""
    return {
        "assistant_id": new.assistant_id,
        "owner": new.owner,
        "system": new.system,
        "graph_id": new.graph_id,
        "name": new.name,
        "description": new.description,
        "config": json(new.config),
        "context": json(new.context),
        "metadata": json(new.metadata),
    }


def assistant_version_params(assistant: Assistant, json: Callable[[Any], Any]) -> dict[str, Any]:
    """Bind values of an `assistant_versions` row; `json` encodes a JSON column for the driver."""
    return {
        "assistant_id": assistant.assistant_id,
        "version": assistant.version,
        "graph_id": assistant.graph_id,
        "name": assistant.name,
        "description": assistant.description,
        "config": json(assistant.config),
        "context": json(assistant.context),
        "metadata": json(assistant.metadata),
    }


def usage_params(usage: TokenUsage | None) -> dict[str, int | None]:
    """Bind values for the three usage columns; all NULL keeps the stored usage."""
    return {
        "input_tokens": usage.input_tokens if usage is not None else None,
        "output_tokens": usage.output_tokens if usage is not None else None,
        "total_tokens": usage.total_tokens if usage is not None else None,
    }
