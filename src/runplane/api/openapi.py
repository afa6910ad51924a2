"""`/openapi.json`, generated from the same `Endpoint` table that parses requests, and `/docs`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from runplane.api.routing import UUID_PATH_PARAMS, Endpoint, Reply
from runplane.api.schemas import ErrorOut

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")

_ERRORS: Mapping[int, str] = {
    400: "Malformed request (bad Content-Length).",
    401: "Missing or invalid credentials.",
    403: "The caller may not do this.",
    404: "Unknown thread, run or assistant (or one that belongs to someone else).",
    409: "Conflict: busy thread (`reject`), duplicate id, or a run that is running.",
    413: "Request body too large.",
    415: "The body is not declared as JSON (`Content-Type: application/json`).",
    422: "Invalid request: `detail` names the offending field.",
    503: "The store is unavailable.",
}

DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>runplane API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "./openapi.json", dom_id: "#ui"});</script>
</body></html>
"""


def _models(endpoints: Iterable[Endpoint]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorOut, "serialization"): None}
    for endpoint in endpoints:
        if isinstance(endpoint.body, type):
            seen[(endpoint.body, "validation")] = None
        for reply in endpoint.replies.values():
            if isinstance(reply.schema, type):
                seen[(reply.schema, "serialization")] = None
    return list(seen)


def _clean(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "title"}


def _assistant_id(assistant_ids: Sequence[str] | None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": "An assistant id, or a graph name."}
    if assistant_ids is not None:
        # The registry is fixed when the app starts, so the document can list every valid id.
        schema["enum"] = list(assistant_ids)
    return schema


def _parameters(endpoint: Endpoint, assistant_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(endpoint.path):
        schema: dict[str, Any] = {"type": "string"}
        if name in UUID_PATH_PARAMS:
            schema["format"] = "uuid"
        elif name == "assistant_id":
            schema = _assistant_id(assistant_ids)
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if endpoint.query is not None:
        properties = endpoint.query.model_json_schema(ref_template=REF)["properties"]
        for name, info in endpoint.query.model_fields.items():
            prop = _clean(properties[name])
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": info.is_required(),
                "schema": prop,
            }
            if info.description:
                param["description"] = info.description
            params.append(param)
    for header in endpoint.headers:
        params.append(
            {
                "name": header.name,
                "in": "header",
                "required": False,
                "description": header.description,
                "schema": dict(header.schema),
            }
        )
    return params


def _response(reply: Reply, refs: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.schema is not None:
        schema = refs[reply.schema] if isinstance(reply.schema, type) else dict(reply.schema)
        out["content"] = {reply.media_type: {"schema": schema}}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
        }
    return out


def _error_statuses(endpoint: Endpoint, system: bool, secured: bool) -> Sequence[int]:
    if system:
        return [422] if endpoint.query is not None else []
    statuses = [404, 409, 422, 503]
    if endpoint.body is not None:
        statuses += [400, 413, 415]
    if secured:
        statuses += [401, 403]
    return statuses


#: Request bodies whose `assistant_id` names an assistant (or a graph).
_RUN_BODIES = ("RunCreateStateful", "RunCreateStateless")


def build_openapi(
    endpoints: Sequence[Endpoint],
    *,
    title: str,
    version: str,
    system: Sequence[Endpoint] = (),
    assistant_ids: Sequence[str] | None = None,
    secured: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints` (with their error replies) and `system` ones.

    Args:
        endpoints: the API's routes.
        title: document title.
        version: API version.
        system: health and info routes (documented with fewer error replies).
        assistant_ids: every accepted assistant id and graph name, to document them exactly.
        secured: requests need credentials (document 401 and 403 answers).
    """
    everything = [*endpoints, *system]
    key_map, top = models_json_schema(_models(everything), ref_template=REF)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    refs = {model: ref for (model, _mode), ref in key_map.items()}
    error_ref = refs[ErrorOut]
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in everything:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
        }
        params = _parameters(endpoint, assistant_ids)
        if params:
            operation["parameters"] = params
        if endpoint.body is not None:
            if isinstance(endpoint.body, TypeAdapter):
                schema = endpoint.body.json_schema(ref_template=REF)
                components.update(schema.pop("$defs", {}))
            else:
                schema = refs[endpoint.body]
            operation["requestBody"] = {
                "required": not endpoint.body_optional,
                "content": {"application/json": {"schema": schema}},
            }
        responses = {str(code): _response(reply, refs) for code, reply in endpoint.replies.items()}
        for code in _error_statuses(endpoint, any(endpoint is e for e in system), secured):
            responses.setdefault(
                str(code),
                {"description": _ERRORS[code], "content": {"application/json": {"schema": error_ref}}},
            )
        operation["responses"] = responses
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    for name in _RUN_BODIES:
        if name in components:
            properties = components[name]["properties"]
            properties["assistant_id"] = {**properties["assistant_id"], **_assistant_id(assistant_ids)}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
