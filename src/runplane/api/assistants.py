"""`/assistants` endpoints: configured, versioned graphs kept by the store.

Every graph the runtime serves has its system assistant (LangGraph's deterministic id); wherever an
assistant id is expected, the graph's name is accepted too. An assistant is its creator's: others
do not see it (404). System assistants are everyone's to read; only single-user mode may change them.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from starlette.responses import Response

from runplane.api import resource_schemas as rs
from runplane.api import schemas as s
from runplane.api.authz import filter_matches, merge_metadata_filter, split_filters
from runplane.api.errors import ApiError
from runplane.api.render import assistant_json, json_response, select
from runplane.api.routing import Call, Endpoint, Reply
from runplane.core.errors import NotFound
from runplane.core.graphs import Assistant
from runplane.core.models import AssistantFilter, AssistantPatch, Json, ThreadFilter

TAG = "Assistants"


async def resolve_assistant(
    call: Call, assistant_id: str, *, authorized: bool = True, for_run: bool = False
) -> Assistant:
    """The assistant a request names (an id or a graph name), visible to the caller and, with
    `authorized`, to the call's authorization filters (an assistants route's); NotFound otherwise.
    `for_run`: perhaps this process's copy (`RunManager.assistant_for_run`), for a run admitted
    with `assistant_seen`."""
    await call.manager.register_graphs(call.runtime.assistants())
    read = call.manager.assistant_for_run if for_run else call.manager.get_assistant
    assistant = await read(assistant_id, call.owner)
    if authorized and not filter_matches(assistant.metadata, call.filters):
        raise NotFound(f"assistant {assistant_id} not found")
    return assistant


def version_json(version: Assistant) -> dict[str, Any]:
    """One version, as LangGraph lists them (its creation time, no `updated_at`)."""
    rendered = assistant_json(version)
    rendered.pop("updated_at", None)
    return rendered


def _filter(call: Call, body: s.AssistantSearch | s.AssistantCount, **page: Any) -> AssistantFilter | None:
    equal, _ = split_filters(call.filters)
    metadata = merge_metadata_filter(body.metadata or {}, equal)
    if metadata is None:
        return None
    return AssistantFilter(graph_id=body.graph_id, name=body.name, metadata=metadata, **page)


async def _matching(call: Call, body: s.AssistantSearch | s.AssistantCount) -> list[Assistant]:
    """Every match, for the filters the store cannot apply (`$contains`)."""
    filter = _filter(call, body, limit=1000)
    if filter is None:
        return []
    found: list[Assistant] = []
    while True:
        page = await call.manager.search_assistants(call.owner, filter)
        found.extend(a for a in page if filter_matches(a.metadata, call.filters))
        if len(page) < filter.limit:
            return found
        filter = replace(filter, offset=filter.offset + filter.limit)


def _check_config_context(body: rs.AssistantCreate | rs.AssistantPatch) -> None:
    if body.config is not None and body.config.configurable and body.context:
        # LangGraph answers 400 (a 422 elsewhere in runplane): the request is well formed.
        raise ApiError(400, "Cannot specify both configurable and context. Prefer setting context alone.")


async def create_assistant(call: Call) -> Response:
    body: rs.AssistantCreate = call.body
    _check_config_context(body)
    await call.manager.register_graphs(call.runtime.assistants())
    assistant = await call.manager.create_assistant(
        body.graph_id,
        call.owner,
        assistant_id=body.assistant_id,
        config=body.config.model_dump(exclude_unset=True) if body.config is not None else None,
        context=body.context,
        metadata=body.metadata,
        name=body.name,
        description=body.description,
        if_exists=body.if_exists or "raise",
    )
    return json_response(assistant_json(assistant))


async def search_assistants(call: Call) -> Response:
    body: s.AssistantSearch = call.body
    await call.manager.register_graphs(call.runtime.assistants())
    _, rest = split_filters(call.filters)
    sort: dict[str, Any] = {"sort_by": body.sort_by or "created_at", "sort_order": body.sort_order or "desc"}
    if rest:
        every = await _matching(call, body)
        page = every[body.offset : body.offset + body.limit]
        total = len(every)
    else:
        filter = _filter(call, body, limit=body.limit, offset=body.offset, **sort)
        page = await call.manager.search_assistants(call.owner, filter) if filter is not None else []
        total = await call.manager.count_assistants(call.owner, filter) if filter is not None else 0
    headers = {"X-Pagination-Total": str(total)}
    if body.offset + body.limit < total:
        headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return json_response([select(assistant_json(a), body.select) for a in page], headers=headers)


async def count_assistants(call: Call) -> Response:
    body: s.AssistantCount = call.body
    await call.manager.register_graphs(call.runtime.assistants())
    _, rest = split_filters(call.filters)
    if rest:
        return json_response(len(await _matching(call, body)))
    filter = _filter(call, body)
    return json_response(await call.manager.count_assistants(call.owner, filter) if filter else 0)


async def get_assistant(call: Call) -> Response:
    return json_response(assistant_json(await resolve_assistant(call, call.path["assistant_id"])))


async def patch_assistant(call: Call) -> Response:
    body: rs.AssistantPatch = call.body
    _check_config_context(body)
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    patch = AssistantPatch(
        graph_id=body.graph_id,
        config=body.config.model_dump(exclude_unset=True) if body.config is not None else None,
        context=body.context,
        metadata=body.metadata,
        name=body.name,
        description=body.description,
    )
    return json_response(
        assistant_json(await call.manager.update_assistant(assistant.assistant_id, patch, call.owner))
    )


async def delete_assistant(call: Call) -> Response:
    query: rs.AssistantDeleteQuery = call.query
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    await call.manager.delete_assistant(assistant.assistant_id, call.owner)
    if query.delete_threads:
        await _delete_threads_of(call, assistant.assistant_id)
    return Response(status_code=204)


async def _delete_threads_of(call: Call, assistant_id: str) -> None:
    """LangGraph's `delete_threads=true`: the caller's threads whose metadata names the assistant."""
    wanted: Json = {"assistant_id": assistant_id}
    while True:
        threads = await call.manager.search_threads(call.owner, ThreadFilter(metadata=wanted, limit=100))
        visible = [t for t in threads if filter_matches(t.metadata, call.filters)]
        for thread in visible:
            with contextlib.suppress(NotFound):
                await call.manager.delete_thread(thread.thread_id, call.owner)
                await call.runtime.delete_thread(thread.thread_id)
        if len(threads) < 100 or not visible:
            return


async def list_versions(call: Call) -> Response:
    body: rs.AssistantVersions = call.body
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    versions = await call.manager.assistant_versions(
        assistant.assistant_id, call.owner, metadata=body.metadata, limit=body.limit, offset=body.offset
    )
    return json_response([version_json(v) for v in versions if filter_matches(v.metadata, call.filters)])


async def set_latest_version(call: Call) -> Response:
    body: rs.AssistantLatest = call.body
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    latest = await call.manager.set_latest_assistant_version(assistant.assistant_id, body.version, call.owner)
    return json_response(assistant_json(latest))


async def get_assistant_graph(call: Call) -> Response:
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    query: s.GraphQuery = call.query
    return json_response(await call.runtime.graph_drawable(assistant.graph_id, xray=query.xray))


async def get_assistant_schemas(call: Call) -> Response:
    assistant = await resolve_assistant(call, call.path["assistant_id"])
    schemas = await call.runtime.graph_schemas(assistant.graph_id)
    return json_response({"graph_id": assistant.graph_id, **schemas})


async def get_assistant_subgraphs(call: Call) -> Response:
    # Subgraph schemas are not extracted; the SDK accepts an empty mapping.
    await resolve_assistant(call, call.path["assistant_id"])
    return json_response({})


async def get_assistant_subgraphs_in(call: Call) -> Response:
    await resolve_assistant(call, call.path["assistant_id"])
    return json_response({})


_ASSISTANT = {200: Reply("The assistant.", s.AssistantOut)}
_SUBGRAPHS = {200: Reply("Subgraph schemas by namespace.", {"type": "object"})}
_LIST = {"type": "array", "items": {"type": "object"}}

ENDPOINTS = (
    Endpoint("POST", "/assistants", create_assistant, "Create an assistant", TAG, body=rs.AssistantCreate,
             replies={**_ASSISTANT, 409: Reply("The assistant exists.", s.ErrorOut)}),
    Endpoint("POST", "/assistants/search", search_assistants, "Search assistants", TAG,
             body=s.AssistantSearch, body_optional=True,
             replies={200: Reply("Matching assistants.", _LIST,
                                 headers={"X-Pagination-Total": "How many match.",
                                          "X-Pagination-Next": "Offset of the next page, if any."})}),
    Endpoint("POST", "/assistants/count", count_assistants, "Count assistants", TAG,
             body=s.AssistantCount, body_optional=True,
             replies={200: Reply("How many assistants match.", {"type": "integer"})}),
    Endpoint("GET", "/assistants/{assistant_id}", get_assistant, "Get an assistant", TAG, replies=_ASSISTANT),
    Endpoint("PATCH", "/assistants/{assistant_id}", patch_assistant,
             "Update an assistant (adds a version and makes it current)", TAG, body=rs.AssistantPatch,
             body_optional=True, replies=_ASSISTANT),
    Endpoint("DELETE", "/assistants/{assistant_id}", delete_assistant,
             "Delete an assistant and its versions (its active runs are cancelled)", TAG,
             query=rs.AssistantDeleteQuery, replies={204: Reply("Deleted.")}),
    Endpoint("POST", "/assistants/{assistant_id}/versions", list_versions, "List an assistant's versions",
             TAG, body=rs.AssistantVersions, body_optional=True,
             replies={200: Reply("Versions, newest first.", _LIST)}),
    Endpoint("POST", "/assistants/{assistant_id}/latest", set_latest_version,
             "Make a version of an assistant current", TAG, body=rs.AssistantLatest, replies=_ASSISTANT),
    Endpoint("GET", "/assistants/{assistant_id}/graph", get_assistant_graph, "Get the assistant's graph", TAG,
             query=s.GraphQuery, replies={200: Reply("Nodes and edges.", {"type": "object"})}),
    Endpoint("GET", "/assistants/{assistant_id}/schemas", get_assistant_schemas,
             "Get the assistant's JSON schemas", TAG, replies={200: Reply("The schemas.", s.GraphSchemaOut)}),
    Endpoint("GET", "/assistants/{assistant_id}/subgraphs", get_assistant_subgraphs,
             "Get the assistant's subgraphs", TAG, query=s.SubgraphsQuery, replies=_SUBGRAPHS),
    Endpoint("GET", "/assistants/{assistant_id}/subgraphs/{namespace}", get_assistant_subgraphs_in,
             "Get the assistant's subgraphs in a namespace", TAG, query=s.SubgraphsQuery, replies=_SUBGRAPHS),
)  # fmt: skip
