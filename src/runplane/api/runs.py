"""Run endpoints: create (background, streaming, waiting), read, cancel, join, and stateless runs.

What a run should do is validated here once and stored as `RunKwargs`; the worker executes exactly
that. A stateless run gets its own thread, which the worker deletes when the run ends unless the
caller asked to keep it (`temporary`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, TypeAdapter
from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.assistants import resolve_assistant
from runplane.api.authz import filter_matches
from runplane.api.errors import ApiError
from runplane.api.http_config import with_configurable_headers
from runplane.api.render import final_output, json_response, run_json, select
from runplane.api.routing import Call, Endpoint, HeaderParam, Reply
from runplane.api.sse import EventStream, OnDisconnect, WaitJson, mode_filter
from runplane.core.errors import AssistantChanged, InvalidInput, NotFound
from runplane.core.events import StreamEvent
from runplane.core.graphs import Assistant
from runplane.core.manager import MAX_LIMIT, new_id
from runplane.core.models import AssistantSeen, Json, Run, RunFilter, ThreadFilter
from runplane.core.resources import merge_assistant_config
from runplane.core.run_kwargs import RunKwargs
from runplane.core.stream_modes import StreamModes

TAG = "Runs"
_EVENT_ID_PATTERN = r"^(-1|[0-9]{1,30}(-[0-9]{1,30})?)?$"
_EVENT_ID = re.compile(_EVENT_ID_PATTERN)
BATCH = TypeAdapter(Annotated[list[s.RunCreateStateless], Field(min_length=1, max_length=100)])


# -- building runs ----------------------------------------------------------------------------------


def run_config(body: s.RunCreateBase) -> Json | None:
    """The run's `config` as stored in its kwargs: the one place the request's config is built."""
    if body.config is None:
        return None
    return body.config.model_dump(exclude_unset=True)


def thread_config(body: s.RunCreateBase, assistant: Assistant) -> Json:
    """The config the run leaves on its thread, as the reference server builds it: the assistant's
    config under the run's, with only the assistant's `configurable` (the run's stays the run's)."""
    configurable = assistant.config.get("configurable") or {}
    return {**assistant.config, **(run_config(body) or {}), "configurable": dict(configurable)}


def build_kwargs(
    body: s.RunCreateBase,
    assistant: Assistant,
    *,
    temporary: bool = False,
    required_modes: tuple[str, ...] = (),
) -> RunKwargs:
    """The request as `RunKwargs`: only what was given, plus the graph to run."""
    given = body.model_fields_set
    # The assistant's config and context, under the run's (LangGraph's precedence), and the
    # version they come from: a later PATCH of the assistant does not change this run.
    config, context = merge_assistant_config(assistant, run_config(body), body.context)
    durability = body.durability
    if durability is None and body.checkpoint_during is not None:
        durability = "async" if body.checkpoint_during else "exit"
    checkpoint, checkpoint_id = None, None
    if isinstance(body, s.RunCreateStateful):
        checkpoint = body.checkpoint.model_dump(exclude_none=True) if body.checkpoint is not None else None
        checkpoint_id = body.checkpoint_id
    return RunKwargs(
        graph_id=assistant.graph_id,
        input=body.input if "input" in given and body.command is None else None,
        command=body.command.model_dump(exclude_unset=True) if body.command is not None else None,
        config=config or {},
        context=context or {},
        stream_mode=StreamModes.parse(body.stream_mode, required=required_modes),
        stream_subgraphs=bool(body.stream_subgraphs),
        stream_resumable=bool(body.stream_resumable),
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
        checkpoint=checkpoint,
        checkpoint_id=checkpoint_id,
        durability=durability,
        webhook=body.webhook,
        feedback_keys=body.feedback_keys,
        assistant_version=assistant.version,
        temporary=temporary,
    )


@dataclass(frozen=True, slots=True)
class Created:
    run: Run
    assistant: Assistant
    stateless: bool

    def url(self, root: str, suffix: str = "") -> str:
        return f"{root}/threads/{self.run.thread_id}/runs/{self.run.run_id}{suffix}"

    def content_location(self, root: str) -> str:
        # Stateless runs are announced without their thread, as the reference server does, so the
        # SDK's `on_run_created` reports `thread_id=None` for them.
        if self.stateless:
            return f"{root}/runs/{self.run.run_id}"
        return self.url(root)


def _graph_of(assistant: Assistant) -> dict[str, Any]:
    """What a run records on its thread (which graph ran last, for the state endpoints). The store
    merges it in the admission transaction: patching the thread after the wake-up would lock it
    while a worker claims, and the claim would skip it until its fallback poll (issue 18)."""
    return {"graph_id": assistant.graph_id, "assistant_id": assistant.assistant_id}


async def create(call: Call, body: s.RunCreateBase, *, wait: bool = False) -> Created:
    """Admit a run for `body`, on the path's thread or, without one, on a new temporary thread.

    The run is built from this process's copy of its assistant, admitted only while that is the
    assistant's current version. When another process changed it, nothing of that try was
    written, and the run is built again from a fresh read and admitted as it was before such
    copies were kept: without a check, as the reference server admits it."""
    assistant = await resolve_assistant(call, body.assistant_id, authorized=False, for_run=True)
    try:
        return await _create_from(call, body, assistant, wait=wait, seen=assistant.seen)
    except AssistantChanged:
        call.manager.forget_assistant(assistant.assistant_id)
    assistant = await resolve_assistant(call, body.assistant_id, authorized=False, for_run=True)
    return await _create_from(call, body, assistant, wait=wait, seen=None)


async def _create_from(
    call: Call, body: s.RunCreateBase, assistant: Assistant, *, wait: bool, seen: AssistantSeen | None
) -> Created:
    # A graph that failed to load at start stays listed, but a run on it is refused before anything
    # is created (`GraphUnavailable`, 424), rather than admitted to fail in a worker.
    call.runtime.resolve(assistant.graph_id)
    configurable = body.config.configurable if body.config is not None else None
    if configurable and body.context:
        raise ApiError(  # LangGraph's server's words
            400,
            "Cannot specify both configurable and context. Prefer setting context alone. Context was "
            "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable.",
        )
    metadata = {
        **assistant.metadata,
        "graph_id": assistant.graph_id,
        "assistant_id": assistant.assistant_id,
        **(body.metadata or {}),
    }
    thread_id = call.path.get("thread_id")
    if thread_id is not None:
        assert isinstance(body, s.RunCreateStateful)
        run = await call.manager.create_run(
            thread_id,
            assistant.assistant_id,
            call.owner,
            kwargs=with_configurable_headers(call, build_kwargs(body, assistant)),
            metadata=metadata,
            multitask_strategy=body.multitask_strategy or "enqueue",
            if_not_exists=body.if_not_exists or "reject",
            after_seconds=body.after_seconds,
            thread_config=thread_config(body, assistant),
            thread_metadata_update=_graph_of(assistant),
            awaited=wait,
            assistant_seen=seen,
        )
        return Created(run, assistant, stateless=False)

    assert isinstance(body, s.RunCreateStateless)
    temporary = (body.on_completion or "delete") == "delete"
    thread = await call.manager.create_thread(
        call.owner,
        thread_id=new_id(),
        # With the run's metadata, as the reference server does: an authorization handler that
        # stamps the run (e.g. its owner) thereby stamps the thread its filters are checked on.
        metadata={
            "graph_id": assistant.graph_id,
            "assistant_id": assistant.assistant_id,
            **(body.metadata or {}),
        },
    )
    try:
        run = await call.manager.create_run(
            thread.thread_id,
            assistant.assistant_id,
            call.owner,
            # A waiting stateless caller reads the result from the stream: the thread may be gone.
            kwargs=with_configurable_headers(
                call,
                build_kwargs(
                    body,
                    assistant,
                    temporary=temporary,
                    required_modes=("values",) if wait and temporary else (),
                ),
            ),
            metadata=metadata,
            after_seconds=body.after_seconds,
            thread_config=thread_config(body, assistant),
            awaited=wait and not temporary,  # a temporary run's waiter reads its stream
            assistant_seen=seen,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await call.manager.delete_thread(thread.thread_id, call.owner)
        raise
    return Created(run, assistant, stateless=True)


def _root(call: Call) -> str:
    return str(call.request.scope.get("root_path", "")).rstrip("/")


def _canceller(call: Call, run_id: str, thread_id: str, enabled: bool) -> OnDisconnect | None:
    if not enabled:
        return None

    async def cancel() -> None:
        with contextlib.suppress(NotFound):
            await call.manager.cancel_run(run_id, call.owner, action="interrupt", thread_id=thread_id)

    return cancel


def _on_disconnect(call: Call, body: s.RunCreateBase) -> bool:
    return (body.on_disconnect or call.settings.default_on_disconnect) == "cancel"


# -- responses --------------------------------------------------------------------------------------


async def _thread_output(call: Call, run_id: str, thread_id: str) -> Any:
    return final_output(*await call.manager.wait_for_outcome(run_id, thread_id, call.owner))


async def _stream_output(call: Call, created: Created, events: AsyncIterator[StreamEvent]) -> Any:
    """A temporary run's result, read from its stream: the last `values` (or the `error`) event."""
    last_values: bytes | None = None
    error: bytes | None = None
    async for event in events:
        if event.event == "values":
            last_values = event.data
        elif event.event == "error":
            error = event.data
    if error is not None:
        return b'{"__error__":' + error + b"}"
    if last_values is not None:
        return last_values
    return await _thread_output(call, created.run.run_id, created.run.thread_id)


def _subscribe_created(call: Call, run: Run) -> AsyncIterator[StreamEvent]:
    """The stream of a run this request has just created for its caller.

    Ownership is known, so the run is not read again: `manager.stream_run` would, and a fast
    temporary run may already have been deleted with its thread by then (its events stay on the
    bus for the retention period).
    """
    return call.manager.follow_new_run(run.run_id, call.owner)


def _background(call: Call, created: Created) -> Response:
    return json_response(
        run_json(created.run), headers={"Content-Location": created.content_location(_root(call))}
    )


async def _streaming(call: Call, created: Created, body: s.RunCreateBase) -> Response:
    run = created.run
    events = _subscribe_created(call, run)
    root = _root(call)
    return EventStream(  # type: ignore[return-value]
        events,
        headers={
            "Location": created.content_location(root) + "/stream",
            "Content-Location": created.content_location(root),
        },
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
        with_ids=run.kwargs.stream_resumable,
        on_disconnect=_canceller(call, run.run_id, run.thread_id, _on_disconnect(call, body)),
    )


async def _waiting(call: Call, created: Created, body: s.RunCreateBase) -> Response:
    run = created.run
    if run.kwargs.temporary:
        events = _subscribe_created(call, run)

        async def compute() -> Any:
            return await _stream_output(call, created, events)

    else:

        async def compute() -> Any:
            return await _thread_output(call, run.run_id, run.thread_id)

    root = _root(call)
    return WaitJson(  # type: ignore[return-value]
        compute,
        headers={"Location": created.url(root, "/join"), "Content-Location": created.content_location(root)},
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
        on_disconnect=_canceller(call, run.run_id, run.thread_id, _on_disconnect(call, body)),
    )


# -- handlers ---------------------------------------------------------------------------------------


async def create_run(call: Call) -> Response:
    return _background(call, await create(call, call.body))


async def stream_run(call: Call) -> Response:
    return await _streaming(call, await create(call, call.body), call.body)


async def wait_run(call: Call) -> Response:
    return await _waiting(call, await create(call, call.body, wait=True), call.body)


async def create_stateless_run(call: Call) -> Response:
    return await create_run(call)


async def stream_stateless_run(call: Call) -> Response:
    return await stream_run(call)


async def wait_stateless_run(call: Call) -> Response:
    return await wait_run(call)


async def create_batch(call: Call) -> Response:
    bodies: list[s.RunCreateStateless] = call.body
    for body in bodies:  # refuse the whole batch before creating anything
        await resolve_assistant(call, body.assistant_id, authorized=False)
    created = [await create(call, body) for body in bodies]
    return json_response([run_json(c.run) for c in created])


async def list_runs(call: Call) -> Response:
    query: s.RunListQuery = call.query
    runs = await call.manager.list_runs(
        call.path["thread_id"],
        call.owner,
        RunFilter(status=query.status, limit=query.limit, offset=query.offset),
    )
    return json_response([select(run_json(r), query.select) for r in runs])


async def get_run(call: Call) -> Response:
    run = await call.manager.get_run(call.path["run_id"], call.owner, call.path["thread_id"])
    return json_response(run_json(run))


async def delete_run(call: Call) -> Response:
    """204, and the run is gone. A running run is stopped first (the reference server deletes the
    record and lets it run on, holding its thread busy); see the README's compatibility notes."""
    await call.manager.delete_run(call.path["run_id"], call.owner, call.path["thread_id"], stop_running=True)
    return Response(status_code=204)


async def cancel_run(call: Call) -> Response:
    """202 and no body at once; with `wait`, 200 and the run's output once it stopped (a join), as
    the reference server answers."""
    query: s.CancelQuery = call.query
    thread_id, run_id = call.path["thread_id"], call.path["run_id"]
    await call.manager.cancel_run(run_id, call.owner, action=query.action, thread_id=thread_id)
    if not query.wait:
        return Response(status_code=202)

    async def compute() -> Any:
        return await _thread_output(call, run_id, thread_id)

    url = f"{_root(call)}/threads/{thread_id}/runs/{run_id}"
    return WaitJson(  # type: ignore[return-value]
        compute,
        headers={"Location": f"{url}/join", "Content-Location": url},
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
    )


async def join_run(call: Call) -> Response:
    thread_id, run_id = call.path["thread_id"], call.path["run_id"]
    await call.manager.get_run(run_id, call.owner, thread_id)  # 404 now, not in the body later
    query: s.JoinQuery = call.query

    async def compute() -> Any:
        return await _thread_output(call, run_id, thread_id)

    url = f"{_root(call)}/threads/{thread_id}/runs/{run_id}"
    return WaitJson(  # type: ignore[return-value]
        compute,
        headers={"Location": f"{url}/join", "Content-Location": url},
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
        on_disconnect=_canceller(call, run_id, thread_id, query.cancel_on_disconnect),
    )


def _last_event_id(raw: str | None) -> tuple[str | None, bool]:
    """The id to resume after, and whether to stream only from now on.

    As on the reference server: without the header (or with an empty one) a join hears only what
    happens from now on; `-1` replays everything, an id replays what followed it.
    """
    if not raw:
        return None, True
    if not _EVENT_ID.match(raw):
        raise InvalidInput(f"invalid Last-Event-ID {raw[:64]!r}")
    return (None if raw == "-1" else raw), False


async def join_stream(call: Call) -> Response:
    thread_id, run_id = call.path["thread_id"], call.path["run_id"]
    query: s.JoinStreamQuery = call.query
    last_event_id, from_now = _last_event_id(call.request.headers.get("last-event-id"))
    events = await call.manager.stream_run(
        run_id, call.owner, last_event_id=last_event_id, thread_id=thread_id, from_now=from_now
    )
    url = f"{_root(call)}/threads/{thread_id}/runs/{run_id}"
    return EventStream(  # type: ignore[return-value]
        events,
        headers={"Location": f"{url}/stream", "Content-Location": url},
        heartbeat_seconds=call.settings.heartbeat_seconds,
        max_seconds=call.settings.max_wait_seconds,
        with_ids=True,
        accept=mode_filter(StreamModes.parse(query.stream_mode, default=())),
        on_disconnect=_canceller(call, run_id, thread_id, query.cancel_on_disconnect),
    )


async def _runs_with_status(call: Call, status: str, thread_id: str | None) -> list[Run]:
    """Every active run of the caller in `status` (pending, running or all): busy threads hold them."""
    thread_ids: list[str] = []
    offset = 0
    while True:
        page = await call.manager.search_threads(
            call.owner,
            ThreadFilter(
                status="busy",
                ids=(thread_id,) if thread_id is not None else None,
                limit=MAX_LIMIT,
                offset=offset,
            ),
        )
        thread_ids.extend(t.thread_id for t in page if filter_matches(t.metadata, call.filters))
        if len(page) < MAX_LIMIT:
            break
        offset += MAX_LIMIT
    statuses = ("pending", "running") if status == "all" else (status,)
    found: list[Run] = []
    for thread_id in thread_ids:
        with contextlib.suppress(NotFound):
            for wanted in statuses:
                found.extend(
                    await call.manager.list_runs(
                        thread_id,
                        call.owner,
                        RunFilter(status=wanted, limit=MAX_LIMIT),  # type: ignore[arg-type]
                    )
                )
    return found


async def cancel_runs(call: Call) -> Response:
    body: s.RunsCancel = call.body
    action = call.query.action
    if body.status is not None:
        runs = await _runs_with_status(call, body.status, body.thread_id)
        targets = [(r.run_id, r.thread_id) for r in runs]
    else:
        assert body.thread_id is not None and body.run_ids is not None
        targets = [(run_id, body.thread_id) for run_id in dict.fromkeys(body.run_ids)]
    cancelled = 0
    for run_id, thread_id in targets:
        with contextlib.suppress(NotFound):
            await call.manager.cancel_run(run_id, call.owner, action=action, thread_id=thread_id)
            cancelled += 1
    if not cancelled:
        raise NotFound("No runs found to cancel.")
    return Response(status_code=204)


# -- routes -----------------------------------------------------------------------------------------

_LOCATION = {"Content-Location": "The run's URL (`/threads/{thread_id}/runs/{run_id}`, or `/runs/{run_id}`)."}
_STREAM_HEADERS = {**_LOCATION, "Location": "Where to resume the stream (`.../runs/{run_id}/stream`)."}
_WAIT_HEADERS = {**_LOCATION, "Location": "Where to join the run (`.../runs/{run_id}/join`)."}
_RUN = {200: Reply("The run.", s.RunOut, headers=_LOCATION)}
#: One server-sent event (OpenAPI 3.1 reads an event stream's schema as each event's).
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "The stream mode (`values`, `custom`, ...), or `error`."},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "description": "Resume after it with `Last-Event-ID` (resumable runs)."},
    },
    "required": ["event", "data"],
}
_SSE = {
    200: Reply(
        "Server-sent events, until the run ends.", _SSE_EVENT, "text/event-stream", headers=_STREAM_HEADERS
    )
}
_OUTPUT = {
    200: Reply(
        "The thread's values after the run; `__error__` or `__interrupt__` when it failed or "
        "stopped at an interrupt.",
        {},
        headers=_WAIT_HEADERS,
    )
}

ENDPOINTS = (
    Endpoint("POST", "/threads/{thread_id}/runs", create_run, "Create a background run", TAG,
             body=s.RunCreateStateful, replies=_RUN),
    Endpoint("POST", "/threads/{thread_id}/runs/stream", stream_run, "Create a run and stream it", TAG,
             body=s.RunCreateStateful, replies=_SSE),
    Endpoint("POST", "/threads/{thread_id}/runs/wait", wait_run, "Create a run and wait for its output",
             TAG, body=s.RunCreateStateful, replies=_OUTPUT),
    Endpoint("GET", "/threads/{thread_id}/runs", list_runs, "List a thread's runs", TAG,
             query=s.RunListQuery,
             replies={200: Reply("Runs, newest first.", {"type": "array", "items": {"type": "object"}})}),
    Endpoint("GET", "/threads/{thread_id}/runs/{run_id}", get_run, "Get a run", TAG,
             replies={200: Reply("The run.", s.RunOut)}),
    Endpoint("DELETE", "/threads/{thread_id}/runs/{run_id}", delete_run,
             "Delete a run (a running one is stopped first)", TAG,
             replies={204: Reply("Deleted.")}),
    Endpoint("POST", "/threads/{thread_id}/runs/{run_id}/cancel", cancel_run, "Cancel a run", TAG,
             query=s.CancelQuery,
             replies={200: Reply("With `wait`: the run's output once it stopped (as a join).", {},
                                 headers=_WAIT_HEADERS),
                      202: Reply("Without `wait`: accepted (the run stops shortly).")}),
    Endpoint("GET", "/threads/{thread_id}/runs/{run_id}/join", join_run, "Wait for a run's output", TAG,
             query=s.JoinQuery, replies=_OUTPUT),
    Endpoint("GET", "/threads/{thread_id}/runs/{run_id}/stream", join_stream, "Stream a run's events", TAG,
             query=s.JoinStreamQuery,
             headers=(HeaderParam("Last-Event-ID", "Resume after this event id (`-1`: from the start).",
                                  {"type": "string", "pattern": _EVENT_ID_PATTERN}),),
             replies=_SSE),
    Endpoint("POST", "/runs/cancel", cancel_runs, "Cancel runs by id or by status", TAG,
             query=s.BulkCancelQuery, body=s.RunsCancel, replies={204: Reply("Cancelled.")}),
    Endpoint("POST", "/runs", create_stateless_run, "Create a stateless background run", TAG,
             body=s.RunCreateStateless, replies=_RUN),
    Endpoint("POST", "/runs/stream", stream_stateless_run, "Create a stateless run and stream it", TAG,
             body=s.RunCreateStateless, replies=_SSE),
    Endpoint("POST", "/runs/wait", wait_stateless_run, "Create a stateless run and wait for its output", TAG,
             body=s.RunCreateStateless, replies=_OUTPUT),
    Endpoint("POST", "/runs/batch", create_batch, "Create stateless background runs", TAG, body=BATCH,
             replies={200: Reply("The runs.", {"type": "array", "items": {"type": "object"}})}),
)  # fmt: skip
