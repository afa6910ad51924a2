"""`create_app`: the Starlette application serving the LangGraph Platform API over a `RunManager`.

The app owns no resources: the caller (the CLI, or a test) opens the store, bus and runtime, builds the
manager and closes everything afterwards.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute

from runplane.api import assistants, runs, threads
from runplane.api import schemas as s
from runplane.api.auth import ApiKeyAuth, Authenticate, AuthMiddleware, CustomAuthenticator, path_params_of
from runplane.api.authz import CustomAuthGuard, check_access_table
from runplane.api.errors import http_exception_handler
from runplane.api.middleware import HeaderLimit, OriginGuard, RequestId
from runplane.api.openapi import DOCS_HTML, build_openapi
from runplane.api.render import json_response
from runplane.api.routing import Call, Endpoint, Guard, InvalidIds, Reply, Services, build_routes
from runplane.api.settings import ApiSettings as ApiSettings
from runplane.core.graphs import GraphRuntime
from runplane.core.health import check_dependencies
from runplane.core.manager import RunManager

ENDPOINTS: tuple[Endpoint, ...] = (*assistants.ENDPOINTS, *threads.ENDPOINTS, *runs.ENDPOINTS)


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


async def ok(call: Call) -> Response:
    """Liveness; with `check_db=1`, readiness: each dependency `healthy` or `unhealthy`, and 500
    when one is not, as LangGraph's server answers."""
    if call.query.check_db:
        services = await check_dependencies(call.manager)
        healthy = all(services.values())
        body = {"ok": healthy, "services": {k: "healthy" if v else "unhealthy" for k, v in services.items()}}
        return json_response(body, status_code=200 if healthy else 500)
    return json_response({"ok": True, "services": {}})


async def info(call: Call) -> Response:
    return json_response(
        {
            "version": call.settings.version,
            "langgraph_py_version": _package_version("langgraph"),
            "flags": {"assistants": True, "crons": False, "langsmith": False},
            "host": {"kind": "self-hosted"},
        }
    )


SYSTEM: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/ok",
        ok,
        "Health check",
        "System",
        query=s.OkQuery,
        replies={
            200: Reply("Healthy.", s.OkOut),
            500: Reply("A dependency is unhealthy (check_db=1).", s.OkOut),
        },
    ),
    Endpoint("GET", "/info", info, "Server information", "System", replies={200: Reply("Info.", s.InfoOut)}),
)


#: Response headers a browser page may read across origins (when CORS is configured).
_EXPOSED_HEADERS = ["Location", "Content-Location", "X-Pagination-Total", "X-Pagination-Next"]


def _authentication(settings: ApiSettings, paths: list[str]) -> Authenticate | None:
    if settings.api_keys is not None and settings.custom_auth is not None:
        raise ValueError("use API keys or custom auth, not both")
    if settings.api_keys is not None:
        return ApiKeyAuth(settings.api_keys)
    if settings.custom_auth is not None:
        return CustomAuthenticator(
            settings.custom_auth, path_params=path_params_of(paths), max_body_bytes=settings.max_body_bytes
        )
    return None


def _middleware(settings: ApiSettings, authenticate: Authenticate | None) -> list[Middleware]:
    """Outermost first: header bound, CORS (only when configured), cross-site guard, authentication."""
    stack = [Middleware(RequestId), Middleware(HeaderLimit, max_bytes=settings.max_header_bytes)]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=_EXPOSED_HEADERS,
            )
        )
    stack.append(Middleware(OriginGuard, allowed=settings.cors_origins))
    if authenticate is not None:
        stack.append(Middleware(AuthMiddleware, authenticate=authenticate))
    return stack


def create_app(manager: RunManager, runtime: GraphRuntime, settings: ApiSettings | None = None) -> Starlette:
    """The HTTP API over `manager` (runs and threads) and `runtime` (graphs and thread state).

    Args:
        manager: the run manager every endpoint calls.
        runtime: the graphs (assistants) and their checkpointed state.
        settings: HTTP knobs (and authentication); defaults when None.

    Raises:
        ValueError: both API keys and custom auth are configured, or custom auth is configured and a
            route has no authorization rule.
    """
    settings = settings or ApiSettings()
    authenticate = _authentication(settings, [e.path for e in (*SYSTEM, *ENDPOINTS)])
    guard: Guard | None = None
    if settings.custom_auth is not None:
        check_access_table(ENDPOINTS)
        guard = CustomAuthGuard(settings.custom_auth)
    services = Services(manager, runtime, settings, guard)
    assistants = runtime.assistants()
    document = build_openapi(
        ENDPOINTS,
        title="runplane",
        version=settings.version,
        system=SYSTEM,
        assistant_ids=[
            *sorted(a.assistant_id for a in assistants),
            *sorted({a.graph_id for a in assistants}),
        ],
        secured=authenticate is not None,
    )

    async def openapi(call: Call) -> Response:
        return json_response(document)

    async def docs(call: Call) -> Response:
        return HTMLResponse(DOCS_HTML)

    extra: Sequence[Endpoint] = [Endpoint("GET", "/openapi.json", openapi, "OpenAPI document", "System")]
    if settings.docs:
        extra = [*extra, Endpoint("GET", "/docs", docs, "API documentation", "System")]
    routes: list[BaseRoute] = [*build_routes((*SYSTEM, *ENDPOINTS, *extra), services)]
    invalid_ids = InvalidIds(ENDPOINTS)

    async def unmatched(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 404:
            response = invalid_ids.response(request)
            if response is not None:
                return response
        return await http_exception_handler(request, exc)

    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: unmatched},
        middleware=_middleware(settings, authenticate),
    )
