"""Thread streaming v2 (`client.threads.stream(...)` in langgraph-sdk 0.4): commands at
`POST /threads/{thread_id}/commands`, events at `POST /threads/{thread_id}/stream/events` (SSE) and
`WebSocket /threads/{thread_id}/stream/events`.

Commands: `run.start` creates a run on the thread (the thread is created by the first one) with
the stream modes the projection needs; `input.respond` resumes an interrupted thread with
`Command(resume={interrupt_id: response})`; `agent.getTree` answers the run's namespace tree;
`subscription.*` are acknowledged (the filter is the event stream's body, or the WebSocket's
first frame). Each run is an ordinary run of the `RunManager`, visible on the runs API.

Events: a connection follows the thread's runs one after another, each projected into protocol
events (`_projection.RunProjection`), and stays open for the next run until the client leaves.
Sequence numbers are per thread: the n-th run of the thread (in creation order) numbers its
events `n * SEQ_STRIDE + 1, + 2, ...`. A projection is deterministic, so a client reconnecting
with `since` gets exactly the events after its cursor: none lost, none twice. Without `since`, a
connection starts at the thread's latest run (so a stream opened right after `run.start` sees
that run even if it already ended).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Any

import orjson
from pydantic import Field
from starlette.requests import Request
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from runplane.api import runs
from runplane.api import schemas as s
from runplane.api.errors import ApiError
from runplane.api.protocols._projection import RUN_STREAM_MODES, ProtocolEvent, RunProjection
from runplane.api.protocols._runs import as_route, status_and_detail
from runplane.api.render import flat_interrupts, json_response
from runplane.api.routing import OWNER_SCOPE_KEY, Call, Endpoint, Reply, Services
from runplane.api.sse import EventStream
from runplane.core.errors import NotFound
from runplane.core.events import StreamEvent
from runplane.core.manager import MAX_LIMIT
from runplane.core.models import Run, RunFilter

TAG = "Thread streaming"
#: Sequence numbers reserved per run: run n of a thread numbers its events from n * SEQ_STRIDE + 1.
SEQ_STRIDE = 1_000_000_000
CHANNELS = frozenset(
    {"values", "updates", "checkpoints", "messages", "tools", "custom", "lifecycle", "input", "tasks"}
)


CHANNEL_PATTERN = "^(" + "|".join(sorted(CHANNELS)) + "|custom:.+)$"


class ProtocolCommand(s.Body):
    """A protocol command (`ProtocolCommand`): `run.start`, `input.respond`, `agent.getTree`, ..."""

    id: int
    method: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    #: Not part of the protocol: where custom authorization stamps the metadata of the thread a
    #: `run.start` creates (as it stamps a run's body on the runs API).
    metadata: dict[str, Any] | None = Field(None, json_schema_extra={"readOnly": True})

    # What custom authorization reads of a request that may create a thread (as `POST
    # /threads/{thread_id}/runs` with `if_not_exists: create` does): `run.start` creates it.
    @property
    def if_not_exists(self) -> str:
        return "create" if self.method == "run.start" else "reject"


class EventStreamRequest(s.Body):
    """Which events a stream carries (`SubscribeParams`), and where to resume (`since`)."""

    #: The channels above, or `custom:<name>` (stated in the schema, so a client learns them there).
    channels: list[Annotated[str, Field(pattern=CHANNEL_PATTERN)]] = Field(min_length=1)
    namespaces: list[list[str]] | None = None
    depth: int | None = Field(None, ge=0)
    since: int | None = Field(None, ge=0)


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- runs of the thread ----------------------------------------------------------------------------


async def _runs_in_order(call: Call, thread_id: str) -> list[Run]:
    """The thread's runs, oldest first; none while the thread does not exist (for this caller)."""
    try:
        found = await call.manager.list_runs(thread_id, call.owner, RunFilter(limit=MAX_LIMIT))
    except NotFound:
        return []
    return sorted(found, key=lambda r: (r.created_at, r.run_id))


async def _through_seq(call: Call, thread_id: str, run_id: str) -> int:
    """The cursor just before the run's events (the protocol's `applied_through_seq`)."""
    ordered = await _runs_in_order(call, thread_id)
    ordinal = next((i for i, r in enumerate(ordered, 1) if r.run_id == run_id), len(ordered))
    return ordinal * SEQ_STRIDE


def _channel(event: ProtocolEvent) -> str:
    return "input" if event.method == "input.requested" else event.method


def _matches(event: ProtocolEvent, request: EventStreamRequest) -> bool:
    if _channel(event) not in request.channels:
        return False
    if not request.namespaces:
        return True
    namespace = event.namespace
    for prefix in request.namespaces:
        if len(prefix) > len(namespace):
            continue
        if all(
            seg == got or (":" not in seg and got.partition(":")[0] == seg)
            for seg, got in zip(prefix, namespace, strict=False)
        ):
            if request.depth is None or len(namespace) - len(prefix) <= request.depth:
                return True
    return False


async def _project(call: Call, run: Run, ordinal: int) -> AsyncIterator[dict[str, Any]]:
    """One run's protocol events, numbered in the run's slice of the thread's sequence."""
    projection = RunProjection(run.kwargs.graph_id or run.assistant_id)
    count = 0

    def envelope(event: ProtocolEvent) -> dict[str, Any]:
        nonlocal count
        count += 1
        return event.envelope(f"{run.run_id}:{count}", ordinal * SEQ_STRIDE + count) | {"_event": event}

    for event in projection.start():
        yield envelope(event)
    try:
        stream = await call.manager.stream_run(run.run_id, call.owner, thread_id=run.thread_id)
    except NotFound:  # deleted meanwhile (rollback): it ends here
        stream = None
    if stream is not None:
        async for item in stream:
            for event in projection.feed(item.event, item.data):
                yield envelope(event)
    try:
        final = await call.manager.wait_for_run(run.run_id, call.owner, thread_id=run.thread_id)
    except NotFound:
        final = None
    for event in projection.finish(final.status if final is not None else "interrupted"):
        yield envelope(event)


async def thread_events(
    call: Call, thread_id: str, request: EventStreamRequest
) -> AsyncIterator[dict[str, Any]]:
    """The thread's protocol events after `request.since`, run after run, until the caller leaves."""
    since = request.since
    next_ordinal = None if since is None else max(since // SEQ_STRIDE, 1)
    async with call.manager.new_run_hints() as hints:
        while True:
            ordered = await _runs_in_order(call, thread_id)
            if next_ordinal is None:
                next_ordinal = max(len(ordered), 1)
            if next_ordinal <= len(ordered):
                async for envelope in _project(call, ordered[next_ordinal - 1], next_ordinal):
                    event = envelope.pop("_event")
                    if (since is None or envelope["seq"] > since) and _matches(event, request):
                        yield envelope
                next_ordinal += 1
                continue
            # Wait for the thread's next run: any new run wakes us (hints can be lost: re-read anyway).
            with contextlib.suppress(TimeoutError, StopAsyncIteration):
                async with asyncio.timeout(call.manager.settings.wait_fallback_seconds):
                    await anext(hints)


# -- commands --------------------------------------------------------------------------------------


def _resolve_interrupts(thread_interrupts: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """`{interrupt_id: response}` from `input.respond` params (one, or a `responses` batch)."""
    entries = params.get("responses")
    if not isinstance(entries, list):
        entries = [params]
    pending = {str(i.get("id")) for i in flat_interrupts(dict(thread_interrupts)) if isinstance(i, dict)}
    resume: dict[str, Any] = {}
    for entry in entries:
        interrupt_id = entry.get("interrupt_id") if isinstance(entry, dict) else None
        if not isinstance(interrupt_id, str):
            raise CommandError("invalid_argument", "input.respond requires an interrupt_id.")
        if interrupt_id not in pending:
            raise CommandError("invalid_argument", f"Unknown or already-consumed interrupt: {interrupt_id}")
        resume[interrupt_id] = entry.get("response")
    return resume


async def _create_run(call: Call, thread_id: str, body: dict[str, Any]) -> tuple[Any, int]:
    inner = await as_route(
        call,
        "POST",
        "/threads/{thread_id}/runs",
        path_params={"thread_id": thread_id},
        body=s.RunCreateStateful.model_validate(
            {
                **body,
                "stream_mode": RUN_STREAM_MODES,
                "stream_subgraphs": True,
                "if_not_exists": "create",
                "multitask_strategy": "enqueue",
            }
        ),
    )
    created = await runs.create(inner, inner.body)
    return {"run_id": created.run.run_id}, await _through_seq(call, thread_id, created.run.run_id)


async def _run_start(call: Call, thread_id: str, params: Mapping[str, Any]) -> Any:
    assistant_id = params.get("assistant_id")
    if not isinstance(assistant_id, str) or not assistant_id:
        raise CommandError("invalid_argument", "run.start requires an assistant_id.")
    body: dict[str, Any] = {"assistant_id": assistant_id}
    for name in ("input", "config", "metadata", "context"):
        if params.get(name) is not None:
            body[name] = params[name]
    return await _create_run(call, thread_id, body)


async def _input_respond(call: Call, thread_id: str, params: Mapping[str, Any]) -> Any:
    thread = await call.manager.get_thread(thread_id, call.owner)
    if thread.status != "interrupted" or not thread.interrupts:
        raise CommandError("no_such_run", "No interrupted run is bound to this thread.")
    resume = _resolve_interrupts(thread.interrupts, params)
    assistant_id = thread.metadata.get("assistant_id")
    if not isinstance(assistant_id, str):
        raise CommandError("no_such_run", "No interrupted run is bound to this thread.")
    return await _create_run(call, thread_id, {"assistant_id": assistant_id, "command": {"resume": resume}})


async def _get_tree(call: Call, thread_id: str, params: Mapping[str, Any]) -> Any:
    """The latest run's namespaces (root and subgraphs) with their lifecycle status, read from its
    projection: replayed when the run has ended, the root alone while it runs."""
    ordered = await _runs_in_order(call, thread_id)
    if not ordered:
        raise CommandError("no_such_run", "No run is bound to this thread.")
    latest = ordered[-1]
    status: dict[tuple[str, ...], tuple[str, str | None]] = {
        (): ("started", latest.kwargs.graph_id or latest.assistant_id)
    }
    if latest.is_terminal:
        async for envelope in _project(call, latest, len(ordered)):
            event: ProtocolEvent = envelope["_event"]
            if event.method == "lifecycle":
                data = event.data
                status[event.namespace] = (str(data.get("event")), data.get("graph_name"))

    def node(namespace: tuple[str, ...]) -> dict[str, Any]:
        phase, graph_name = status[namespace]
        tree: dict[str, Any] = {
            "namespace": list(namespace),
            "status": "started" if phase == "running" else phase,
            "graph_name": graph_name,
        }
        children = sorted(ns for ns in status if len(ns) == len(namespace) + 1 and ns[:-1] == namespace)
        if children:
            tree["children"] = [node(child) for child in children]
        return tree

    return {"tree": node(())}, len(ordered) * SEQ_STRIDE


async def _acknowledge(call: Call, thread_id: str, params: Mapping[str, Any]) -> Any:
    # Over HTTP the subscription is the event stream's own body: nothing to keep here.
    return {}, 0


_COMMANDS = {
    "run.start": _run_start,
    "input.respond": _input_respond,
    "agent.getTree": _get_tree,
    "subscription.subscribe": _acknowledge,
    "subscription.unsubscribe": _acknowledge,
    "subscription.reconnect": _acknowledge,
}


async def thread_commands(call: Call) -> Any:
    command: ProtocolCommand = call.body
    thread_id = call.path["thread_id"]
    handler = _COMMANDS.get(command.method)
    try:
        if handler is None:
            raise CommandError("unknown_command", f"Unknown protocol command: {command.method}")
        if command.method != "run.start":
            await _visible_thread(call, thread_id)
        result, seq = await handler(call, thread_id, command.params)
    except CommandError as exc:
        return json_response({"type": "error", "id": command.id, "error": exc.code, "message": exc.message})
    except NotFound as exc:
        # Another user's thread is exactly an unknown one (a 404, as everywhere in the API).
        return json_response(
            {
                "detail": exc.message,
                "type": "error",
                "id": command.id,
                "error": "not_found",
                "message": exc.message,
            },
            404,
        )
    except Exception as exc:
        status, detail = status_and_detail(exc)
        code = "invalid_argument" if status < 500 else "unknown_error"
        return json_response({"type": "error", "id": command.id, "error": code, "message": detail})
    return json_response(
        {"type": "success", "id": command.id, "result": result, "meta": {"applied_through_seq": seq}}
    )


async def _visible_thread(call: Call, thread_id: str) -> None:
    inner = await as_route(call, "GET", "/threads/{thread_id}", path_params={"thread_id": thread_id})
    await call.manager.get_thread(thread_id, inner.owner)


def _checked(request: EventStreamRequest) -> EventStreamRequest:
    unknown = [c for c in request.channels if c not in CHANNELS and not c.startswith("custom:")]
    if unknown:
        raise ApiError(422, f"unsupported channels: {unknown}")
    return request


async def thread_stream_events(call: Call) -> Any:
    # A thread that does not exist yet is waited for: clients subscribe before their first
    # `run.start` creates it. Another user's thread looks exactly the same: it never shows anything.
    thread_id = call.path["thread_id"]
    request = _checked(call.body)

    async def frames() -> AsyncIterator[StreamEvent]:
        async for envelope in thread_events(call, thread_id, request):
            yield StreamEvent(envelope["method"], orjson.dumps(envelope), str(envelope["seq"]))

    return EventStream(frames(), headers={}, heartbeat_seconds=call.settings.heartbeat_seconds, with_ids=True)


# -- WebSocket ---------------------------------------------------------------------------------------


def websocket_routes(services: Services, enabled: Sequence[Endpoint]) -> list[WebSocketRoute]:
    """`WebSocket /threads/{thread_id}/stream/events`, when its SSE twin is among the `enabled`
    endpoints: the first frame is a `subscription.subscribe` command carrying the filter; the
    server acknowledges it, then sends the events as text frames."""
    if not any(e.handler is thread_stream_events for e in enabled):
        return []

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        thread_id = str(websocket.path_params["thread_id"])
        # The HTTP machinery (authorization, ownership) works on a `Call`; build one for this socket.
        as_http = {**websocket.scope, "type": "http", "method": "GET"}  # what `Request` reads of it
        owner = websocket.scope.get(OWNER_SCOPE_KEY, "")
        call = Call(Request(as_http), services, owner, {"thread_id": thread_id}, None, None)
        try:
            first = orjson.loads(await websocket.receive_text())
            command = ProtocolCommand.model_validate(first)
            if command.method != "subscription.subscribe":
                raise CommandError("invalid_argument", "the first frame must be subscription.subscribe")
            request = _checked(EventStreamRequest.model_validate(command.params))
        except WebSocketDisconnect:
            return
        except Exception as exc:
            message = exc.message if isinstance(exc, CommandError | NotFound) else status_and_detail(exc)[1]
            code = "not_found" if isinstance(exc, NotFound) else "invalid_argument"
            await websocket.send_text(
                orjson.dumps({"type": "error", "id": 1, "error": code, "message": message}).decode()
            )
            await websocket.close(code=4404 if isinstance(exc, NotFound) else 4400)
            return
        await websocket.send_text(
            orjson.dumps(
                {
                    "type": "success",
                    "id": command.id,
                    "result": {"subscription_id": "1", "replayed_events": 0},
                }
            ).decode()
        )

        async def pump() -> None:
            async for envelope in thread_events(call, thread_id, request):
                await websocket.send_text(orjson.dumps(envelope).decode())

        async def until_closed() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()  # commands go over HTTP; frames are ignored

        tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(until_closed())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    return [WebSocketRoute("/threads/{thread_id:runplane_uuid}/stream/events", endpoint)]


_COMMAND_SAMPLE = {
    "type": "object",
    "description": "`{type: success|error, id, result | error, message, meta}`",
}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/threads/{thread_id}/commands",
        thread_commands,
        "Thread streaming: send a protocol command",
        TAG,
        body=ProtocolCommand,
        replies={
            200: Reply("The command's result or error.", _COMMAND_SAMPLE),
            404: Reply("Thread not found.", s.ErrorOut),
        },
    ),
    Endpoint(
        "POST",
        "/threads/{thread_id}/stream/events",
        thread_stream_events,
        "Thread streaming: the thread's protocol events (SSE)",
        TAG,
        body=EventStreamRequest,
        replies={
            200: Reply("Protocol events, one SSE event each.", media_type="text/event-stream"),
            404: Reply("Thread not found.", s.ErrorOut),
        },
    ),
)
