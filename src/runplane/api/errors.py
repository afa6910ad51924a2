"""The one table from errors to HTTP statuses, and the JSON error body every failure uses.

Every error body is `{"detail": "<message>"}`, as LangGraph's server answers; validation failures add
`errors`, a list of `{"loc", "msg", "type"}` naming each offending field; server errors (5xx) add
`request_id`, the id under which the server logged the failure (also the `X-Request-Id` header).
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from runplane.core.errors import (
    CancelRequested,
    Conflict,
    GraphUnavailable,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    RunplaneError,
    StoreUnavailable,
    ThreadBusy,
)

logger = logging.getLogger(__name__)

#: The id of the request being handled (set by `api.middleware.RequestId`): server errors are
#: logged with it and the client is given it, so the two can be matched.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("runplane_request_id", default=None)

#: Seconds a client is told to wait (Retry-After) when a dependency is unavailable.
RETRY_AFTER_SECONDS = 1

#: Core error -> HTTP status. Looked up along the exception's MRO, so subclasses inherit a row.
STATUS_BY_ERROR: dict[type[RunplaneError], int] = {
    NotFound: 404,
    ThreadBusy: 409,
    Conflict: 409,
    InvalidInput: 422,
    InvalidTransition: 409,
    LeaseLost: 409,
    CancelRequested: 409,
    StoreUnavailable: 503,
    # LangGraph's server answers 424 for a graph it cannot use ("Graph ... is not valid").
    GraphUnavailable: 424,
}


class ApiError(Exception):
    """A request the HTTP layer refuses before it reaches the core (bad JSON, oversize body...)."""

    def __init__(self, status_code: int, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors


def status_for(exc: RunplaneError) -> int:
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def error_response(
    status_code: int,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code, headers=headers, media_type="application/json")


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validation_error(exc: ValidationError, where: str) -> ApiError:
    """A 422 naming every field pydantic refused (`where` is `body`, `query` or `path`)."""
    errors = [
        {"loc": [where, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]
    if any(err["type"] == "json_invalid" for err in errors):
        return ApiError(422, "Invalid JSON in request body")
    detail = "; ".join(f"{_loc(tuple(err['loc']))}: {err['msg']}" for err in errors)
    return ApiError(422, detail, errors=errors)


def server_error(status_code: int, detail: str, exc: BaseException) -> Response:
    """A 5xx: logged here with its traceback and the request id; the client gets `detail` (generic,
    never a driver message, host or user) and the request id. A 503 says when to retry."""
    request_id = REQUEST_ID.get()
    extra = {"action": "http_error", "request_id": request_id, "status": status_code}
    if status_code == 503:
        # Expected while a dependency is down: no traceback per request, the cause is enough.
        cause = exc.__cause__ or exc
        logger.warning(
            "request %s: %s (%s: %s)", request_id, detail, type(cause).__name__, cause, extra=extra
        )
    else:
        logger.error("request %s failed", request_id, exc_info=exc, extra=extra)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status_code == 503 else {}
    if request_id is None:
        return error_response(status_code, detail, headers=headers)
    body = {"detail": detail, "request_id": request_id}
    return Response(orjson.dumps(body), status_code, headers=headers, media_type="application/json")


def response_for(exc: Exception) -> Response:
    """The JSON error response for anything a handler raised; unexpected errors are logged as 500."""
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.detail, errors=exc.errors)
    if isinstance(exc, StoreUnavailable):
        return server_error(503, "Service Unavailable: a dependency is down, retry later", exc)
    if isinstance(exc, RunplaneError):
        return error_response(status_for(exc), exc.message)
    if isinstance(exc, ValidationError):
        return response_for(validation_error(exc, "body"))
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, exc.detail, headers=dict(exc.headers or {}))
    return server_error(500, "Internal Server Error", exc)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) as JSON bodies."""
    return response_for(exc)
