"""Cron endpoints: `/runs/crons` (stateless: each fire gets a new thread), `/threads/{id}/runs/crons`,
search, count, read, update and delete, as LangGraph's server serves them to `client.crons`.

A cron keeps the request as its `payload` (what the SDK shows) and, built from it once here with the
same code as a run, the `RunKwargs` each fire executes. Firing is the scheduler's
(`RunManager.fire_due_crons`): an ordinary run per slot.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import ConfigDict, Field
from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.authz import filter_matches, merge_metadata_filter, split_filters
from runplane.api.errors import ApiError
from runplane.api.render import json_response, select
from runplane.api.routing import Call, Endpoint, Reply
from runplane.api.runs import build_kwargs
from runplane.core.errors import InvalidInput, NotFound
from runplane.core.graphs import Assistant
from runplane.core.manager import new_id
from runplane.core.models import Cron, CronChanges, CronFilter, Json, NewCron, OnRunCompleted

TAG = "Crons"

CronField = Literal[
    "cron_id", "assistant_id", "thread_id", "on_run_completed", "end_time", "schedule", "timezone",
    "created_at", "updated_at", "user_id", "payload", "next_run_date", "metadata", "enabled",
]  # fmt: skip
CronSortBy = Literal[
    "cron_id", "assistant_id", "thread_id", "next_run_date", "end_time", "created_at", "updated_at"
]


# -- bodies -----------------------------------------------------------------------------------------


class _CronFields(s.Body):
    schedule: str = Field(
        min_length=1, max_length=1024, description="Cron expression (a 6th field: seconds)."
    )
    timezone: str | None = Field(None, max_length=128, description="IANA time zone; UTC when absent.")
    end_time: datetime | None = Field(None, description="No slot fires after this instant.")
    enabled: bool | None = True


class CronCreate(s.RunCreateBase, _CronFields):
    """A stateless cron: each fire runs on a new thread."""

    on_run_completed: Literal["delete", "keep"] | None = Field(
        "delete", description="Delete each fire's thread when its run ends, or keep it."
    )
    multitask_strategy: s.MultitaskStrategyName | None = "enqueue"


class ThreadCronCreate(s.RunCreateBase, _CronFields):
    """A cron on one thread."""

    multitask_strategy: s.MultitaskStrategyName | None = "enqueue"


class CronPatch(s.Body):
    """A cron update: at least one field (an empty body is refused, as by the reference server)."""

    model_config = ConfigDict(**s.Body.model_config, json_schema_extra={"minProperties": 1})

    schedule: str | None = Field(None, min_length=1, max_length=1024)
    timezone: str | None = Field(None, max_length=128)
    end_time: datetime | None = Field(None, description="`null` clears it; absent keeps it.")
    input: Any = None
    metadata: s.Metadata | None = None
    config: s.Config | None = None
    context: s.JsonObject | None = None
    webhook: str | None = Field(None, min_length=1, max_length=65536)
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    on_run_completed: Literal["delete", "keep"] | None = None
    enabled: bool | None = None
    stream_mode: s.StreamModeName | list[s.StreamModeName] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None


class CronSearch(s.Body):
    assistant_id: str | None = None
    thread_id: s.UuidStr | None = None
    enabled: bool | None = None
    metadata: s.JsonObject | None = None
    limit: s.Limit = 10
    offset: s.Offset = 0
    sort_by: CronSortBy | None = "created_at"
    sort_order: s.SortOrder | None = "desc"
    select: list[CronField] | None = None


class CronCount(s.Body):
    assistant_id: str | None = None
    thread_id: s.UuidStr | None = None
    metadata: s.JsonObject | None = None


class CronOut(s.Out):
    cron_id: str
    assistant_id: str
    thread_id: str | None
    user_id: str | None
    schedule: str
    timezone: str | None
    end_time: datetime | None
    payload: s.JsonObject
    next_run_date: datetime | None
    metadata: s.JsonObject
    on_run_completed: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


# -- helpers ----------------------------------------------------------------------------------------


def cron_json(cron: Cron) -> dict[str, Any]:
    return {
        "cron_id": cron.cron_id,
        "assistant_id": cron.assistant_id,
        "thread_id": cron.thread_id,
        "user_id": cron.owner,
        "end_time": cron.end_time,
        "schedule": cron.schedule,
        "timezone": cron.timezone,
        "payload": cron.payload,
        "next_run_date": cron.next_run_date,
        "metadata": cron.metadata,
        "on_run_completed": cron.on_run_completed,
        "enabled": cron.enabled,
        "created_at": cron.created_at,
        "updated_at": cron.updated_at,
    }


def _with_cron_id(config: Any, cron_id: str) -> Json:
    """`config.configurable.cron_id`, as the reference server stamps every cron's runs."""
    config = dict(config or {})
    config["configurable"] = {**(config.get("configurable") or {}), "cron_id": cron_id}
    return config


#: Payload keys that configure the cron, not its runs.
_CRON_ONLY = frozenset(
    {"schedule", "timezone", "end_time", "enabled", "on_run_completed", "multitask_strategy"}
)


def _payload_and_kwargs(raw: Json, assistant: Assistant, cron_id: str, stateless: bool) -> tuple[Json, Json]:
    """The stored payload (the request, as the SDK shows it) and the `RunKwargs` each fire runs."""
    payload = {**raw, "assistant_id": assistant.assistant_id}
    payload["config"] = _with_cron_id(payload.get("config"), cron_id)
    run_fields = {k: v for k, v in payload.items() if k not in _CRON_ONLY}
    if payload.get("context"):
        run_fields.pop("config", None)
    body = s.RunCreateBase.model_validate_json(orjson.dumps(run_fields))
    temporary = stateless and (payload.get("on_run_completed") or "delete") == "delete"
    kwargs = build_kwargs(body, assistant, temporary=temporary)
    if payload.get("context"):  # the run refuses `configurable` next to `context`
        kwargs = replace(kwargs, config={})
    return payload, kwargs.to_json()


def _utc(value: datetime | None) -> datetime | None:
    """An instant in UTC; a time without a zone is taken to be UTC (the SDK sends naive ones as given)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _raw(call: Call) -> Json:
    dumped: Json = call.body.model_dump(mode="json", exclude_unset=True)
    return dumped


async def _visible_cron(call: Call, cron_id: str) -> Cron:
    """The caller's cron, unless authorization filters hide it (then it does not exist)."""
    cron = await call.manager.get_cron(cron_id, call.owner)
    if not filter_matches(cron.metadata, call.filters):
        raise NotFound(f"cron {cron_id} not found")
    return cron


# -- handlers ---------------------------------------------------------------------------------------


async def create_cron(call: Call) -> Response:
    body: CronCreate | ThreadCronCreate = call.body
    assistant = call.runtime.resolve(body.assistant_id)
    thread_id = call.path.get("thread_id")
    stateless = thread_id is None
    cron_id = new_id()
    payload, kwargs = _payload_and_kwargs(_raw(call), assistant, cron_id, stateless)
    on_run_completed: OnRunCompleted | None = None
    if isinstance(body, CronCreate):
        on_run_completed = body.on_run_completed or "delete"
    cron = await call.manager.create_cron(
        NewCron(
            cron_id=cron_id,
            owner=call.owner,
            assistant_id=assistant.assistant_id,
            thread_id=thread_id,
            schedule=body.schedule,
            timezone=body.timezone,
            end_time=_utc(body.end_time),
            enabled=body.enabled is not False,
            on_run_completed=on_run_completed,
            payload=payload,
            kwargs=kwargs,
            metadata=dict(body.metadata or {}),
            multitask_strategy=body.multitask_strategy or "enqueue",
            next_run_date=None,  # the manager computes the first slot
        )
    )
    return json_response(cron_json(cron))


async def create_thread_cron(call: Call) -> Response:
    return await create_cron(call)


async def get_cron(call: Call) -> Response:
    return json_response(cron_json(await _visible_cron(call, call.path["cron_id"])))


async def update_cron(call: Call) -> Response:
    body: CronPatch = call.body
    patch = _raw(call)
    if not patch:
        raise ApiError(400, "Request body cannot be empty")
    cron = await _visible_cron(call, call.path["cron_id"])
    assistant = call.runtime.resolve(cron.assistant_id)
    merged = {**cron.payload, **{k: v for k, v in patch.items() if v is not None}}
    merged["assistant_id"] = cron.payload.get("assistant_id", cron.assistant_id)
    if "end_time" in patch and patch["end_time"] is None:
        merged.pop("end_time", None)
    try:
        payload, kwargs = _payload_and_kwargs(merged, assistant, cron.cron_id, cron.thread_id is None)
    except ValueError as exc:
        raise InvalidInput(f"the updated cron is invalid: {exc}") from None
    updated = await call.manager.update_cron(
        cron.cron_id,
        CronChanges(
            schedule=body.schedule,
            timezone=body.timezone,
            end_time=_utc(body.end_time),
            clear_end_time="end_time" in patch and patch["end_time"] is None,
            enabled=body.enabled,
            on_run_completed=body.on_run_completed if cron.thread_id is None else None,
            payload=payload,
            kwargs=kwargs,
            metadata=body.metadata,
        ),
        call.owner,
    )
    return json_response(cron_json(updated))


async def delete_cron(call: Call) -> Response:
    cron = await _visible_cron(call, call.path["cron_id"])
    await call.manager.delete_cron(cron.cron_id, call.owner)
    return Response(status_code=204)


def _cron_filter(call: Call, body: CronSearch | CronCount) -> tuple[CronFilter | None, dict[str, Any]]:
    equal, rest = split_filters(call.filters)
    metadata = merge_metadata_filter(body.metadata or {}, equal)
    if metadata is None:
        return None, rest
    assistant_id = body.assistant_id
    if assistant_id is not None:
        with contextlib.suppress(NotFound):  # an unknown assistant simply matches no cron
            assistant_id = call.runtime.resolve(assistant_id).assistant_id
    return CronFilter(assistant_id=assistant_id, thread_id=body.thread_id, metadata=metadata), rest


async def search_crons(call: Call) -> Response:
    body: CronSearch = call.body
    base, rest = _cron_filter(call, body)
    if base is None:
        return json_response([], headers={"X-Pagination-Total": "0"})
    filter = CronFilter(
        assistant_id=base.assistant_id,
        thread_id=base.thread_id,
        enabled=body.enabled,
        metadata=base.metadata,
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by or "created_at",
        sort_order=body.sort_order or "desc",
    )
    crons = [
        c for c in await call.manager.search_crons(call.owner, filter) if filter_matches(c.metadata, rest)
    ]
    total = await call.manager.count_crons(call.owner, filter)
    headers = {"X-Pagination-Total": str(total)}
    if body.offset + body.limit < total:
        headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return json_response([select(cron_json(c), body.select) for c in crons], headers=headers)


async def count_crons(call: Call) -> Response:
    body: CronCount = call.body
    base, rest = _cron_filter(call, body)
    if base is None:
        return json_response(0)
    if not rest:
        return json_response(await call.manager.count_crons(call.owner, base))
    matching = await call.manager.search_crons(call.owner, CronFilter(metadata=base.metadata, limit=1000))
    return json_response(sum(1 for c in matching if filter_matches(c.metadata, rest)))


_CRON = {200: Reply("The cron.", CronOut)}

ENDPOINTS = (
    Endpoint("POST", "/runs/crons", create_cron, "Create a stateless cron", TAG, body=CronCreate,
             replies=_CRON),
    Endpoint("POST", "/runs/crons/search", search_crons, "Search crons", TAG, body=CronSearch,
             body_optional=True,
             replies={200: Reply("Crons.", {"type": "array", "items": {"type": "object"}})}),
    Endpoint("POST", "/runs/crons/count", count_crons, "Count crons", TAG, body=CronCount,
             body_optional=True, replies={200: Reply("How many.", {"type": "integer"})}),
    Endpoint("GET", "/runs/crons/{cron_id}", get_cron, "Get a cron", TAG, replies=_CRON),
    Endpoint("PATCH", "/runs/crons/{cron_id}", update_cron, "Update a cron", TAG, body=CronPatch,
             replies=_CRON),
    Endpoint("DELETE", "/runs/crons/{cron_id}", delete_cron, "Delete a cron", TAG,
             replies={204: Reply("Deleted.")}),
    Endpoint("POST", "/threads/{thread_id}/runs/crons", create_thread_cron, "Create a cron on a thread", TAG,
             body=ThreadCronCreate, replies=_CRON),
)  # fmt: skip
