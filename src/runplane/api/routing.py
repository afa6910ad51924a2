"""Declarative endpoints: one `Endpoint` per route feeds both request parsing and `/openapi.json`,
so the document can never drift from what the server accepts.

A handler receives a `Call` (already validated path ids, query model, body model and the caller's
owner) and returns a Starlette response. Any error it raises becomes a JSON error body through
`api.errors`, so a client mistake is never a 500.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runplane.api.errors import ApiError, response_for, validation_error
from runplane.api.schemas import canonical_uuid
from runplane.api.settings import ApiSettings
from runplane.core.graphs import GraphRuntime
from runplane.core.manager import RunManager

#: The ASGI scope key an authentication middleware sets to the caller's identity.
OWNER_SCOPE_KEY = "runplane.owner"

#: Path parameters that must be UUIDs; the message mirrors the reference server's.
UUID_PATH_PARAMS: Mapping[str, str] = {"thread_id": "thread", "run_id": "run"}


@dataclass(frozen=True, slots=True)
class Services:
    """What every handler may use."""

    manager: RunManager
    runtime: GraphRuntime
    settings: ApiSettings


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed request."""

    request: Request
    services: Services
    owner: str
    path: Mapping[str, str]
    query: Any
    body: Any

    @property
    def manager(self) -> RunManager:
        return self.services.manager

    @property
    def runtime(self) -> GraphRuntime:
        return self.services.runtime

    @property
    def settings(self) -> ApiSettings:
        return self.services.settings


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A documented response: its description and body schema (a model, a JSON schema, or none)."""

    description: str
    schema: type[BaseModel] | Mapping[str, Any] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeaderParam:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A route, how to parse its input, and what it answers."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | TypeAdapter[Any] | None = None
    #: An empty body counts as `{}` (the SDK posts no body to copy and cancel).
    body_optional: bool = False
    headers: tuple[HeaderParam, ...] = ()
    replies: Mapping[int, Reply] = field(default_factory=dict)

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return False


def _list_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, info in model.model_fields.items() if _is_list(info.annotation))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ApiError(400, "Invalid Content-Length header") from None
        if too_big:
            raise ApiError(413, f"Request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_path(request: Request) -> dict[str, str]:
    path = dict(request.path_params)
    for name, noun in UUID_PATH_PARAMS.items():
        if name in path:
            try:
                path[name] = canonical_uuid(path[name])
            except ValueError:
                raise ApiError(422, f"Invalid {noun} ID: must be a UUID") from None
    return path


def _parse_query(request: Request, model: type[BaseModel], lists: frozenset[str]) -> BaseModel:
    raw: dict[str, Any] = {}
    params = request.query_params
    for name in model.model_fields:
        if name in lists:
            # httpx sends `None` as an empty value; a list parameter may also be comma-separated.
            values = [v for item in params.getlist(name) for v in item.split(",") if v]
            if values:
                raw[name] = values
        elif name in params and params[name] != "":
            raw[name] = params[name]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, "query") from None


def _parse_body(raw: bytes, endpoint: Endpoint) -> Any:
    if not raw.strip():
        if not endpoint.body_optional:
            raise ApiError(422, "Invalid JSON in request body")
        raw = b"{}"
    validator = endpoint.body
    try:
        if isinstance(validator, TypeAdapter):
            return validator.validate_json(raw, strict=True)
        assert validator is not None
        return validator.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc, "body") from None


def to_route(endpoint: Endpoint, services: Services) -> Route:
    """A Starlette route that parses the request, calls the handler and renders errors as JSON."""
    lists = _list_fields(endpoint.query) if endpoint.query is not None else frozenset()

    async def run(request: Request) -> Response:
        try:
            path = _parse_path(request)
            query = _parse_query(request, endpoint.query, lists) if endpoint.query is not None else None
            body = None
            if endpoint.body is not None:
                body = _parse_body(await read_body(request, services.settings.max_body_bytes), endpoint)
            owner = request.scope.get(OWNER_SCOPE_KEY, "")
            return await endpoint.handler(Call(request, services, owner, path, query, body))
        except Exception as exc:
            return response_for(exc)

    run.__name__ = endpoint.operation_id
    return Route(endpoint.path, run, methods=[endpoint.method], name=endpoint.operation_id)
