"""Thread lifecycle routes: TTLs (set by `POST /threads` and `PATCH /threads/{id}`), `POST
/threads/prune`, `GET /threads/{id}/stream` (the thread's runs one after another) and
`GET /threads/{id}/storage` (the bytes its checkpoints take)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from runplane.api import resource_schemas as rs
from runplane.api import schemas as s
from runplane.api.authz import filter_matches
from runplane.api.errors import ApiError
from runplane.api.render import json_response, select
from runplane.api.routing import Call, Endpoint, HeaderParam, Reply
from runplane.api.sse import EventStream
from runplane.api.thread_schemas import TtlBody, extracted
from runplane.core.errors import NotFound
from runplane.core.graphs import SupportsCheckpointMaintenance
from runplane.core.models import Json, ThreadTtl

TAG = "Threads"


async def apply_ttl(call: Call, thread_id: str, ttl: TtlBody | None) -> None:
    """Record the `ttl` a thread create or update carried (nothing when it carried none)."""
    if ttl is not None:
        await call.manager.set_thread_ttl(
            thread_id, ThreadTtl(minutes=ttl.ttl, strategy=ttl.strategy), call.owner
        )


async def prune_threads(call: Call) -> Response:
    """LangGraph's prune: `delete` removes the threads (runs and checkpoints too); `keep_latest`
    keeps each thread and only its latest checkpoint. Unknown ids are skipped, as on the reference
    server (another user's are unknown); with authorization filters, an id they hide is a 404."""
    body: rs.ThreadPrune = call.body
    ids = list(dict.fromkeys(body.thread_ids))
    if call.filters:
        for thread_id in ids:
            thread = await call.manager.get_thread(thread_id, call.owner)
            if not filter_matches(thread.metadata, call.filters):
                raise NotFound("At least one thread not found or not authorized")
    runtime = call.runtime
    if body.strategy == "keep_latest" and not isinstance(runtime, SupportsCheckpointMaintenance):
        raise ApiError(422, "keep_latest is not supported by this server's checkpointer")
    pruned = 0
    for thread_id in ids:
        with contextlib.suppress(NotFound):
            if body.strategy == "delete":
                await call.manager.delete_thread(thread_id, call.owner)
                await runtime.delete_thread(thread_id)
            else:
                await call.manager.get_thread(thread_id, call.owner)
                assert isinstance(runtime, SupportsCheckpointMaintenance)
                await runtime.prune_checkpoints(thread_id)
            pruned += 1
    return json_response({"pruned_count": pruned})


def with_extracted(
    thread: dict[str, Any], fields: Sequence[str] | None, extract: dict[str, str] | None
) -> Json:
    """A searched thread as answered: its `select`ed fields, plus `extracted` when asked."""
    rendered = select(thread, fields)
    values = extracted(thread, extract)
    if values is not None:
        rendered["extracted"] = values
    return rendered


_LIFECYCLE_EVENTS = frozenset({"metadata", "error"})


def _lifecycle(event: str) -> bool:
    return event in _LIFECYCLE_EVENTS


async def join_thread_stream(call: Call) -> Response:
    thread_id = call.path["thread_id"]
    query: rs.ThreadStreamQuery = call.query
    modes = set(query.stream_mode or ()) | set(query.stream_modes or ())
    last_event_id = call.request.headers.get("last-event-id") or None
    events = await call.manager.stream_thread(thread_id, call.owner, last_event_id=last_event_id)
    accept = _lifecycle if modes and "run_modes" not in modes else None
    url = f"{str(call.request.scope.get('root_path', '')).rstrip('/')}/threads/{thread_id}"
    return EventStream(  # type: ignore[return-value]
        events,
        headers={"Content-Location": url},
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
        with_ids=True,
        accept=accept,
    )


async def get_thread_storage(call: Call) -> Response:
    thread = await call.manager.get_thread(call.path["thread_id"], call.owner)
    runtime = call.runtime
    if not isinstance(runtime, SupportsCheckpointMaintenance):
        raise ApiError(501, "Checkpoint storage is only reported for the built-in checkpointers.")
    return json_response({"thread_id": thread.thread_id, **await runtime.thread_storage(thread.thread_id)})


_SSE = {
    200: Reply("Server-sent events of the thread's runs.", {"type": "string"}, media_type="text/event-stream")
}

ENDPOINTS = (
    Endpoint("POST", "/threads/prune", prune_threads, "Prune threads (delete, or keep their latest state)",
             TAG, body=rs.ThreadPrune,
             replies={200: Reply("How many threads were pruned.", {"type": "object", "properties": {
                 "pruned_count": {"type": "integer"}}})}),
    Endpoint("GET", "/threads/{thread_id}/stream", join_thread_stream, "Join the thread's stream", TAG,
             query=rs.ThreadStreamQuery, replies=_SSE,
             headers=(HeaderParam("Last-Event-ID", "Resume after this event of the thread stream."),)),
    Endpoint("GET", "/threads/{thread_id}/storage", get_thread_storage, "Bytes the thread's checkpoints take",
             TAG, replies={200: Reply("Storage by table and channel.", {"type": "object"}),
                           501: Reply("Not measurable with this checkpointer.", s.ErrorOut)}),
)  # fmt: skip
