"""`/assistants` endpoints, read-only: every graph the runtime knows is one default assistant.

Wherever an assistant id is expected, the graph's name is accepted too.
"""

from __future__ import annotations

from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.authz import filter_matches
from runplane.api.render import assistant_json, json_response, select
from runplane.api.routing import Call, Endpoint, Reply
from runplane.core.graphs import Assistant
from runplane.core.models import Json

TAG = "Assistants"


def _matches(assistant: Assistant, metadata: Json | None, graph_id: str | None, name: str | None) -> bool:
    if graph_id is not None and assistant.graph_id != graph_id:
        return False
    if name is not None and name.lower() not in assistant.name.lower():
        return False
    meta = metadata or {}
    return all(key in assistant.metadata and assistant.metadata[key] == v for key, v in meta.items())


def _matching(call: Call, body: s.AssistantSearch | s.AssistantCount) -> list[Assistant]:
    return [
        a
        for a in call.runtime.assistants()
        if _matches(a, body.metadata, body.graph_id, body.name) and filter_matches(a.metadata, call.filters)
    ]


async def search_assistants(call: Call) -> Response:
    body: s.AssistantSearch = call.body
    found = _matching(call, body)
    sort_by = body.sort_by or "created_at"
    found.sort(
        key=lambda a: (getattr(a, sort_by), a.assistant_id), reverse=(body.sort_order or "desc") == "desc"
    )
    page = found[body.offset : body.offset + body.limit]
    headers = {"X-Pagination-Total": str(len(found))}
    if body.offset + body.limit < len(found):
        headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return json_response([select(assistant_json(a), body.select) for a in page], headers=headers)


async def count_assistants(call: Call) -> Response:
    return json_response(len(_matching(call, call.body)))


async def get_assistant(call: Call) -> Response:
    return json_response(assistant_json(call.runtime.resolve(call.path["assistant_id"])))


async def get_assistant_graph(call: Call) -> Response:
    assistant = call.runtime.resolve(call.path["assistant_id"])
    query: s.GraphQuery = call.query
    return json_response(await call.runtime.graph_drawable(assistant.graph_id, xray=query.xray))


async def get_assistant_schemas(call: Call) -> Response:
    assistant = call.runtime.resolve(call.path["assistant_id"])
    schemas = await call.runtime.graph_schemas(assistant.graph_id)
    return json_response({"graph_id": assistant.graph_id, **schemas})


async def get_assistant_subgraphs(call: Call) -> Response:
    # Subgraph schemas are not extracted; the SDK accepts an empty mapping.
    call.runtime.resolve(call.path["assistant_id"])
    return json_response({})


async def get_assistant_subgraphs_in(call: Call) -> Response:
    call.runtime.resolve(call.path["assistant_id"])
    return json_response({})


_ASSISTANT = {200: Reply("The assistant.", s.AssistantOut)}
_SUBGRAPHS = {200: Reply("Subgraph schemas by namespace.", {"type": "object"})}

ENDPOINTS = (
    Endpoint("POST", "/assistants/search", search_assistants, "Search assistants", TAG,
             body=s.AssistantSearch, body_optional=True,
             replies={200: Reply("Matching assistants.", {"type": "array", "items": {"type": "object"}},
                                 headers={"X-Pagination-Total": "How many match.",
                                          "X-Pagination-Next": "Offset of the next page, if any."})}),
    Endpoint("POST", "/assistants/count", count_assistants, "Count assistants", TAG,
             body=s.AssistantCount, body_optional=True,
             replies={200: Reply("How many assistants match.", {"type": "integer"})}),
    Endpoint("GET", "/assistants/{assistant_id}", get_assistant, "Get an assistant", TAG, replies=_ASSISTANT),
    Endpoint("GET", "/assistants/{assistant_id}/graph", get_assistant_graph, "Get the assistant's graph", TAG,
             query=s.GraphQuery, replies={200: Reply("Nodes and edges.", {"type": "object"})}),
    Endpoint("GET", "/assistants/{assistant_id}/schemas", get_assistant_schemas,
             "Get the assistant's JSON schemas", TAG, replies={200: Reply("The schemas.", s.GraphSchemaOut)}),
    Endpoint("GET", "/assistants/{assistant_id}/subgraphs", get_assistant_subgraphs,
             "Get the assistant's subgraphs", TAG, query=s.SubgraphsQuery, replies=_SUBGRAPHS),
    Endpoint("GET", "/assistants/{assistant_id}/subgraphs/{namespace}", get_assistant_subgraphs_in,
             "Get the assistant's subgraphs in a namespace", TAG, query=s.SubgraphsQuery, replies=_SUBGRAPHS),
)  # fmt: skip
