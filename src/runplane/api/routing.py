"""Declarative endpoints: one `Endpoint` per route feeds both request parsing and `/openapi.json`,
so the document can never drift from what the server accepts.

A handler receives a `Call` (already validated path ids, query model, body model and the caller's
owner) and returns a Starlette response. Any error it raises becomes a JSON error body through
`api.errors`, so a client mistake is never a 500.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runplane.api.errors import ApiError, error_response, response_for, validation_error
from runplane.api.settings import ApiSettings
from runplane.core.graphs import GraphRuntime
from runplane.core.manager import RunManager

#: The ASGI scope key an authentication middleware sets to the caller's identity.
OWNER_SCOPE_KEY = "runplane.owner"

#: Path parameters that must be UUIDs; the message mirrors the reference server's.
UUID_PATH_PARAMS: Mapping[str, str] = {"thread_id": "thread", "run_id": "run", "cron_id": "cron"}
_PARAM = re.compile(r"{(\w+)}")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass(frozen=True, slots=True)
class Services:
    """What every handler may use."""

    manager: RunManager
    runtime: GraphRuntime
    settings: ApiSettings
    #: Authorizes each call before its handler runs (LangGraph `@auth.on` handlers); None: no checks.
    guard: Guard | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One parsed request."""

    request: Request
    services: Services
    owner: str
    path: Mapping[str, str]
    query: Any
    body: Any
    #: Metadata filters an authorization handler returned: only matching resources are visible.
    filters: Mapping[str, Any] | None = None

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


class Guard(Protocol):
    """Authorizes a parsed call: returns it (possibly with a rewritten body and `filters`) or raises."""

    async def __call__(self, endpoint: Endpoint, call: Call) -> Call: ...


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
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})


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


def _parse_query(request: Request, model: type[BaseModel], lists: frozenset[str]) -> BaseModel:
    raw: dict[str, Any] = {}
    params = request.query_params
    for name in model.model_fields:
        if name in lists:
            # A list parameter is repeated, or comma-separated.
            values = [v for item in params.getlist(name) for v in item.split(",")]
            if values:
                raw[name] = values
        elif name in params:
            raw[name] = params[name]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, "query") from None


#: A JSON string literal (escapes included), to blank out before counting brackets.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
#: Objects nest like arrays: counting depth, `{` is `[` (mismatched pairs are the parser's to refuse).
_SQUARE = bytes.maketrans(b"{}", b"[]")


def check_json_depth(raw: bytes, max_depth: int) -> None:
    """Refuse (422) a JSON text nesting arrays and objects deeper than `max_depth`.

    Checked on the bytes before parsing, so a hostile body costs a few linear passes in C (one per
    level, at most `max_depth`) rather than a deep recursion in the parser or validators.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    unquoted = _JSON_STRING.sub(b"", raw) if b'"' in raw else raw
    brackets = unquoted.translate(_SQUARE, _NOT_BRACKETS)
    for _ in range(max_depth):
        shorter = brackets.replace(b"[]", b"")  # one pass removes exactly the innermost level
        if not shorter or len(shorter) == len(brackets):
            return  # balanced within the limit, or malformed (the parser says so)
        brackets = shorter
    raise ApiError(422, f"JSON body nested deeper than {max_depth} levels")


_NON_JSON_NUMBER = re.compile(rb"NaN|-?Infinity")


def check_json_numbers(raw: bytes) -> None:
    """Refuse (422) `NaN` and `Infinity`: the parser takes them where any value is allowed, but they
    are not JSON, and stores and clients would choke on them later."""
    if (b"NaN" in raw or b"Infinity" in raw) and _NON_JSON_NUMBER.search(_JSON_STRING.sub(b"", raw)):
        raise ApiError(422, "Invalid JSON in request body: NaN and Infinity are not JSON")


def _is_json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _parse_body(raw: bytes, endpoint: Endpoint, request: Request, max_depth: int) -> Any:
    if not raw.strip():
        if not endpoint.body_optional:
            raise ApiError(422, "Invalid JSON in request body")
        raw = b"{}"
    content_type = request.headers.get("content-type")
    # A declared non-JSON body is refused: browsers send form and text/plain bodies cross-site
    # without a CORS preflight, so accepting them would let any web page drive a local server.
    if content_type is not None and not _is_json_media_type(content_type):
        raise ApiError(415, "Unsupported Content-Type: send the body as application/json")
    check_json_depth(raw, max_depth)
    check_json_numbers(raw)
    validator = endpoint.body
    try:
        if isinstance(validator, TypeAdapter):
            return validator.validate_json(raw, strict=True)
        assert validator is not None
        return validator.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_error(exc, "body") from None


class _UuidConvertor(Convertor[str]):
    """Path segments that are UUIDs (any case), given to handlers in canonical lower case.

    Routing on the shape (instead of validating in the handler) lets a wrong method on a fixed path
    such as `PATCH /threads/search` answer 405, not "invalid thread id".
    """

    regex = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def convert(self, value: str) -> str:
        return value.lower()

    def to_string(self, value: str) -> str:
        return value


class _AssistantConvertor(Convertor[str]):
    """An assistant id or graph name, except where `/assistants/search` and `/assistants/count`
    are meant, so `GET /assistants/search` answers 405 rather than "no such assistant"."""

    regex = "(?!(?:search|count)$)[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("runplane_uuid", _UuidConvertor())
register_url_convertor("runplane_assistant", _AssistantConvertor())


def _route_path(path: str) -> str:
    for name in UUID_PATH_PARAMS:
        path = path.replace(f"{{{name}}}", f"{{{name}:runplane_uuid}}")
    return path.replace("{assistant_id}", "{assistant_id:runplane_assistant}")


def _handle(endpoint: Endpoint, services: Services) -> Callable[[Request], Awaitable[Response]]:
    lists = _list_fields(endpoint.query) if endpoint.query is not None else frozenset()

    async def run(request: Request) -> Response:
        try:
            path = dict(request.path_params)
            query = _parse_query(request, endpoint.query, lists) if endpoint.query is not None else None
            body = None
            settings = services.settings
            if endpoint.body is not None:
                raw = await read_body(request, settings.max_body_bytes)
                body = _parse_body(raw, endpoint, request, settings.max_json_depth)
            owner = request.scope.get(OWNER_SCOPE_KEY, "")
            call = Call(request, services, owner, path, query, body)
            if services.guard is not None:
                call = await services.guard(endpoint, call)
            return await endpoint.handler(call)
        except Exception as exc:
            return response_for(exc)

    return run


def build_routes(endpoints: Iterable[Endpoint], services: Services) -> list[Route]:
    """One Starlette route per path, dispatching on the method, so a 405 lists every allowed one."""
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, {})[endpoint.method] = _handle(endpoint, services)
    routes = []
    for path, handlers in by_path.items():

        async def dispatch(
            request: Request, handlers: Mapping[str, Callable[[Request], Awaitable[Response]]] = handlers
        ) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await handlers[method](request)

        routes.append(Route(_route_path(path), dispatch, methods=list(handlers)))
    return routes


class InvalidIds:
    """What an unmatched request gets: 422 when a path id is not a UUID (as the reference server
    answers), 405 when only the method is wrong, else 404."""

    def __init__(self, endpoints: Iterable[Endpoint]) -> None:
        self._templates: list[tuple[re.Pattern[str], list[str], set[str]]] = []
        by_path: dict[str, set[str]] = {}
        for endpoint in endpoints:
            by_path.setdefault(endpoint.path, set()).add(endpoint.method)
        for path, methods in by_path.items():
            names = _PARAM.findall(path)
            if any(name in UUID_PATH_PARAMS for name in names):
                # Paths are plain `/words/{param}`: nothing to escape.
                pattern = re.compile("^" + _PARAM.sub("([^/]+)", path) + "$")
                self._templates.append((pattern, names, methods))

    def response(self, request: Request) -> Response | None:
        method = "GET" if request.method == "HEAD" else request.method
        allowed: set[str] = set()
        for pattern, names, methods in self._templates:
            match = pattern.match(request.url.path)
            if match is None:
                continue
            if method not in methods:
                allowed |= methods
                continue
            for name, value in zip(names, match.groups(), strict=True):
                if name in UUID_PATH_PARAMS and not _UUID.match(value):
                    return error_response(422, f"Invalid {UUID_PATH_PARAMS[name]} ID: must be a UUID")
        if allowed:
            return error_response(405, "Method Not Allowed", headers={"Allow": ", ".join(sorted(allowed))})
        return None
