"""`/threads` endpoints: thread records (the store) and their graph state (the runtime's checkpointer).

A thread remembers which graph last ran on it in `metadata.graph_id` (set when a run is created, or
given at creation as the SDK's `graph_id=`), which is how the state endpoints know what to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.authz import filter_matches, merge_metadata_filter, split_filters
from runplane.api.errors import ApiError
from runplane.api.render import json_response, thread_json
from runplane.api.routing import Call, Endpoint, Reply
from runplane.api.thread_lifecycle import apply_ttl, with_extracted
from runplane.core.errors import NotFound, RunplaneError
from runplane.core.manager import MAX_LIMIT
from runplane.core.models import Json, Thread, ThreadFilter, ThreadStatus

TAG = "Threads"

#: The state of a thread that has no checkpoint yet (what the reference server answers).
EMPTY_STATE: Json = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": None,
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}

_SORT_BY: dict[str, Any] = {"state_updated_at": "updated_at"}


def graph_of(thread: Thread) -> str | None:
    graph_id = thread.metadata.get("graph_id")
    return graph_id if isinstance(graph_id, str) and graph_id else None


def _values_match(values: Json | None, wanted: Json) -> bool:
    return isinstance(values, dict) and all(k in values and values[k] == v for k, v in wanted.items())


def _filter(
    body: s.ThreadSearch | s.ThreadCount, *, limit: int = 10, offset: int = 0, **sort: Any
) -> ThreadFilter:
    ids = getattr(body, "ids", None)
    return ThreadFilter(
        metadata=body.metadata or {},
        status=body.status,
        ids=tuple(ids) if ids else None,
        limit=limit,
        offset=offset,
        **sort,
    )


async def _scan(call: Call, filter: ThreadFilter, keep: Callable[[Thread], bool]) -> list[Thread]:
    """Every thread matching `filter` that `keep` accepts, in the filter's order.

    For what the store cannot filter on (values, `$contains` authorization filters): this pages
    through the metadata/status matches.
    """
    matches: list[Thread] = []
    offset = 0
    while True:
        page = await call.manager.search_threads(
            call.owner,
            ThreadFilter(
                metadata=filter.metadata,
                status=filter.status,
                ids=filter.ids,
                limit=MAX_LIMIT,
                offset=offset,
                sort_by=filter.sort_by,
                sort_order=filter.sort_order,
            ),
        )
        matches.extend(t for t in page if keep(t))
        if len(page) < MAX_LIMIT:
            return matches
        offset += MAX_LIMIT


async def create_thread(call: Call) -> Response:
    body: s.ThreadCreate = call.body
    metadata = body.metadata or {}
    graph_id = metadata.get("graph_id")
    if body.supersteps and not isinstance(graph_id, str):
        # The reference server creates the thread and then answers 201 with this error instead of
        # a thread; refused before anything is created here, so the client's view stays true.
        raise ApiError(400, "supersteps need a graph: create the thread with graph_id (metadata.graph_id)")
    existing = (
        body.thread_id is not None and body.if_exists == "do_nothing" and await _exists(call, body.thread_id)
    )
    thread = await call.manager.create_thread(
        call.owner,
        thread_id=body.thread_id,
        metadata=metadata,
        if_exists=body.if_exists or "raise",
    )
    if body.supersteps and isinstance(graph_id, str):
        thread = await _apply_supersteps(call, thread, graph_id, body.supersteps, created=not existing)
    await apply_ttl(call, thread.thread_id, body.ttl)
    return json_response(thread_json(thread))


async def _exists(call: Call, thread_id: str) -> bool:
    try:
        await call.manager.get_thread(thread_id, call.owner)
    except NotFound:
        return False
    return True


async def _apply_supersteps(
    call: Call, thread: Thread, graph_id: str, supersteps: list[s.Superstep], *, created: bool
) -> Thread:
    """Write the supersteps of `threads.create`; a refused one takes back the thread it created."""
    steps = [step.model_dump(exclude_none=True) for step in supersteps]
    try:
        written = await call.manager.write_supersteps(
            call.runtime, graph_id, thread.thread_id, call.owner, steps
        )
    except Exception as exc:
        if created:
            await call.manager.delete_thread(thread.thread_id, call.owner)
            await call.runtime.delete_thread(thread.thread_id)
        if isinstance(exc, RunplaneError):
            raise
        raise ApiError(400, f"problems applying the supersteps: {exc or type(exc).__name__}") from exc
    if written is None:
        raise NotFound(f"thread {thread.thread_id} not found")
    return written


async def get_thread(call: Call) -> Response:
    return json_response(thread_json(await call.manager.get_thread(call.path["thread_id"], call.owner)))


async def patch_thread(call: Call) -> Response:
    body: s.ThreadPatch = call.body
    thread = await call.manager.update_thread(call.path["thread_id"], body.metadata or {}, call.owner)
    await apply_ttl(call, thread.thread_id, body.ttl)
    if call.request.headers.get("prefer", "").replace(" ", "").lower() == "return=minimal":
        return Response(status_code=204)
    return json_response(thread_json(thread))


async def delete_thread(call: Call) -> Response:
    thread_id = call.path["thread_id"]
    await call.manager.delete_thread(thread_id, call.owner)
    # The record goes first: once it is gone no new run can write checkpoints to this thread.
    await call.runtime.delete_thread(thread_id)
    return Response(status_code=204)


def _narrowed(
    call: Call, filter: ThreadFilter, values: Json | None
) -> tuple[ThreadFilter | None, Callable[[Thread], bool] | None]:
    """The search `filter` narrowed by the caller's authorization filters (None: nothing can match),
    and the check the store cannot make (None when it makes them all)."""
    equal, rest = split_filters(call.filters)
    metadata = merge_metadata_filter(filter.metadata, equal)
    if metadata is None:
        return None, None
    filter = replace(filter, metadata=metadata)
    if not values and not rest:
        return filter, None

    def keep(thread: Thread) -> bool:
        return filter_matches(thread.metadata, rest) and (not values or _values_match(thread.values, values))

    return filter, keep


async def search_threads(call: Call) -> Response:
    body: s.ThreadSearch = call.body
    sort: dict[str, Any] = {}
    if body.sort_by:
        sort["sort_by"] = _SORT_BY.get(body.sort_by, body.sort_by)
    if body.sort_order:
        sort["sort_order"] = body.sort_order
    filter, keep = _narrowed(call, _filter(body, limit=body.limit, offset=body.offset, **sort), body.values)
    if filter is None:
        threads = []
    elif keep is not None:
        every = await _scan(call, filter, keep)
        threads = every[body.offset : body.offset + body.limit]
    else:
        threads = await call.manager.search_threads(call.owner, filter)
    return json_response([with_extracted(thread_json(t), body.select, body.extract) for t in threads])


async def count_threads(call: Call) -> Response:
    body: s.ThreadCount = call.body
    filter, keep = _narrowed(call, _filter(body), body.values)
    if filter is None:
        return json_response(0)
    if keep is not None:
        return json_response(len(await _scan(call, filter, keep)))
    return json_response(await call.manager.count_threads(call.owner, filter))


async def copy_thread(call: Call) -> Response:
    source = await call.manager.get_thread(call.path["thread_id"], call.owner)
    copy = await call.manager.create_thread(call.owner, metadata=source.metadata)
    await call.runtime.copy_thread(source.thread_id, copy.thread_id)
    status: ThreadStatus = "idle" if source.status == "busy" else source.status
    copy = await call.manager.set_thread_state(
        copy.thread_id, source.values, source.interrupts, call.owner, status=status
    )
    return json_response(thread_json(copy))


async def _state(call: Call, *, checkpoint_id: str | None = None, checkpoint_ns: str = "") -> Response:
    thread = await call.manager.get_thread(call.path["thread_id"], call.owner)
    graph_id = graph_of(thread)
    subgraphs = bool(call.query.subgraphs if call.query is not None else call.body.subgraphs)
    if graph_id is None:
        if checkpoint_id is not None:
            raise NotFound(f"checkpoint {checkpoint_id} not found")
        return json_response(EMPTY_STATE)
    state = await call.runtime.get_state(
        graph_id,
        thread.thread_id,
        checkpoint_id=checkpoint_id,
        checkpoint_ns=checkpoint_ns,
        subgraphs=subgraphs,
    )
    return json_response(state)


async def get_state(call: Call) -> Response:
    return await _state(call)


async def get_state_at_checkpoint(call: Call) -> Response:
    return await _state(call, checkpoint_id=call.path["checkpoint_id"])


async def post_state_checkpoint(call: Call) -> Response:
    checkpoint: s.CheckpointConfig = call.body.checkpoint
    return await _state(
        call, checkpoint_id=checkpoint.checkpoint_id, checkpoint_ns=checkpoint.checkpoint_ns or ""
    )


async def update_state(call: Call) -> Response:
    """A new checkpoint, written while the thread is held in the store: refused (409) while a run is
    active, and no run is admitted until the new state is recorded on the thread (see
    `core.state_updates`)."""
    body: s.ThreadStateUpdate = call.body
    thread = await call.manager.get_thread(call.path["thread_id"], call.owner)
    graph_id = graph_of(thread)
    if graph_id is None:
        raise ApiError(400, no_graph_detail(thread.thread_id))
    checkpoint_id = body.checkpoint_id or (body.checkpoint.checkpoint_id if body.checkpoint else None)
    try:
        result = await call.manager.update_thread_state(
            call.runtime,
            graph_id,
            thread.thread_id,
            call.owner,
            body.values,
            as_node=body.as_node,
            checkpoint_id=checkpoint_id,
        )
    except RunplaneError:
        raise
    except Exception as exc:
        # LangGraph refuses bad updates (unknown node, a list where its state is a dict) with its
        # own exceptions; the reference server answers them 400 with the message.
        raise ApiError(400, str(exc) or type(exc).__name__) from exc
    return json_response(update_reply(result))


def no_graph_detail(thread_id: str) -> str:
    """The reference server's words for a state operation on a thread no graph ran on."""
    return (
        f"Thread '{thread_id}' has no assigned graph ID. This usually occurs when no runs have been "
        "made on this particular thread. This operation requires a graph ID. Please ensure a run has "
        "been made for the thread or manually update the thread metadata (by setting the 'graph_id' "
        "field) before running this operation."
    )


def update_reply(result: Json) -> Json:
    """`checkpoint`, plus the `configurable` and `checkpoint_id` the reference server also sends."""
    checkpoint = result.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return result
    return {
        **result,
        "configurable": checkpoint,
        "checkpoint_id": checkpoint.get("checkpoint_id"),
    }


async def _history(
    call: Call, *, limit: int, before: str | None, metadata: Json | None, checkpoint_id: str | None
) -> Response:
    thread = await call.manager.get_thread(call.path["thread_id"], call.owner)
    graph_id = graph_of(thread)
    if graph_id is None:
        return json_response([])
    states = await call.runtime.get_history(
        graph_id,
        thread.thread_id,
        limit=limit,
        before=before,
        metadata=metadata,
        checkpoint_id=checkpoint_id,
    )
    return json_response(states)


async def get_history(call: Call) -> Response:
    query: s.HistoryQuery = call.query
    before = query.before or None
    return await _history(call, limit=query.limit, before=before, metadata=None, checkpoint_id=None)


async def post_history(call: Call) -> Response:
    body: s.ThreadHistory = call.body
    before = body.before.checkpoint_id if isinstance(body.before, s.CheckpointConfig) else body.before
    return await _history(
        call,
        limit=body.limit,
        before=before,
        metadata=body.metadata,
        checkpoint_id=body.checkpoint.checkpoint_id if body.checkpoint else None,
    )


_THREAD = {200: Reply("The thread.", s.ThreadOut)}
_STATE = {200: Reply("The thread's state.", s.ThreadStateOut)}
_HISTORY = {200: Reply("Past states, newest first.", {"type": "array", "items": {"type": "object"}})}
_NO_CONTENT = {204: Reply("Done.")}

ENDPOINTS = (
    Endpoint("POST", "/threads", create_thread, "Create a thread", TAG, body=s.ThreadCreate,
             body_optional=True, replies=_THREAD),
    Endpoint("POST", "/threads/search", search_threads, "Search threads", TAG, body=s.ThreadSearch,
             body_optional=True,
             replies={200: Reply("Matching threads.", {"type": "array", "items": {"type": "object"}})}),
    Endpoint("POST", "/threads/count", count_threads, "Count threads", TAG, body=s.ThreadCount,
             body_optional=True, replies={200: Reply("How many threads match.", {"type": "integer"})}),
    Endpoint("GET", "/threads/{thread_id}", get_thread, "Get a thread", TAG, replies=_THREAD),
    Endpoint("PATCH", "/threads/{thread_id}", patch_thread, "Merge metadata into a thread", TAG,
             body=s.ThreadPatch, body_optional=True,
             replies={**_THREAD, 204: Reply("Updated (with `Prefer: return=minimal`).")}),
    Endpoint("DELETE", "/threads/{thread_id}", delete_thread, "Delete a thread, its runs and state", TAG,
             replies=_NO_CONTENT),
    Endpoint("POST", "/threads/{thread_id}/copy", copy_thread, "Copy a thread and its state", TAG,
             replies=_THREAD),
    Endpoint("GET", "/threads/{thread_id}/state", get_state, "Get the thread's state", TAG,
             query=s.StateQuery, replies=_STATE),
    Endpoint("POST", "/threads/{thread_id}/state", update_state, "Update the thread's state", TAG,
             body=s.ThreadStateUpdate, body_optional=True,
             replies={200: Reply("The new checkpoint.", s.CheckpointOut)}),
    Endpoint("POST", "/threads/{thread_id}/state/checkpoint", post_state_checkpoint,
             "Get the thread's state at a checkpoint", TAG, body=s.ThreadStateCheckpoint, replies=_STATE),
    Endpoint("GET", "/threads/{thread_id}/state/{checkpoint_id}", get_state_at_checkpoint,
             "Get the thread's state at a checkpoint id", TAG, query=s.StateQuery, replies=_STATE),
    Endpoint("GET", "/threads/{thread_id}/history", get_history, "List past states", TAG,
             query=s.HistoryQuery, replies=_HISTORY),
    Endpoint("POST", "/threads/{thread_id}/history", post_history, "Search past states", TAG,
             body=s.ThreadHistory, body_optional=True, replies=_HISTORY),
)  # fmt: skip
