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
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from runplane.api import assistants, crons, operators, protocols, runs, store, thread_lifecycle, threads
from runplane.api import schemas as s
from runplane.api.auth import ApiKeyAuth, Authenticate, AuthMiddleware, CustomAuthenticator, path_params_of
from runplane.api.authz import CustomAuthGuard, check_access_table
from runplane.api.errors import http_exception_handler
from runplane.api.metrics import HttpMetrics, metrics_route
from runplane.api.middleware import HeaderLimit, OriginGuard, RequestId
from runplane.api.mounting import (
    bare_ok,
    compose,
    custom_http_exception_handler,
    custom_routes_authenticated,
    enabled_endpoints,
    is_unshadowable,
)
from runplane.api.openapi import DOCS_HTML, build_openapi
from runplane.api.origins import PolicyCORSMiddleware, cors_setup
from runplane.api.render import json_response
from runplane.api.routing import Call, Endpoint, Guard, InvalidIds, Reply, Services, build_routes
from runplane.api.settings import ApiSettings as ApiSettings
from runplane.core.graphs import GraphRuntime
from runplane.core.health import check_dependencies
from runplane.core.manager import RunManager
from runplane.ui import ui_routes

ENDPOINTS: tuple[Endpoint, ...] = (
    *assistants.ENDPOINTS,
    *threads.ENDPOINTS,
    *runs.ENDPOINTS,
    *crons.ENDPOINTS,
    *store.ENDPOINTS,
    *thread_lifecycle.ENDPOINTS,
    *protocols.ENDPOINTS,
)


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
            "flags": {"assistants": True, "crons": True, "langsmith": False},
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


def _middleware(settings: ApiSettings) -> list[Middleware]:
    """Outermost first: request id, header bound, CORS (only when some origin is allowed), cross-site
    guard. Authentication runs per route (`api.mounting`)."""
    policy, cors_options = cors_setup(settings, expose_headers=_EXPOSED_HEADERS)
    stack = [Middleware(RequestId), Middleware(HeaderLimit, max_bytes=settings.max_header_bytes)]
    if policy.enabled:
        stack.append(Middleware(PolicyCORSMiddleware, policy=policy, **cors_options))
    stack.append(Middleware(OriginGuard, policy=policy))
    if settings.metrics is not None:
        stack.insert(0, Middleware(HttpMetrics, metrics=settings.metrics))  # outermost: sees every answer
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
    endpoints = enabled_endpoints(ENDPOINTS, settings)
    authenticate = _authentication(settings, [e.path for e in (*SYSTEM, *endpoints)])
    guard: Guard | None = None
    if settings.custom_auth is not None:
        check_access_table(endpoints)
        guard = CustomAuthGuard(settings.custom_auth)
    services = Services(manager, runtime, settings, guard)
    assistants = runtime.assistants()
    document = build_openapi(
        (*endpoints, *operators.ENDPOINTS),
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
    meta: list[BaseRoute] = [*build_routes((*SYSTEM, *extra), services)]
    if settings.http.disable_meta:
        meta = [Route("/ok", bare_ok, methods=["GET"])]
    invalid_ids = InvalidIds(endpoints)
    own_handler = custom_http_exception_handler(settings.http) or http_exception_handler
    # Operators: the dashboard's static files are public (the page sends a key with every API call);
    # /metrics is protected like the API unless opened on purpose (and off with disable_meta).
    public_ops: list[BaseRoute] = list(ui_routes()) if settings.ui else []
    protected_ops: list[BaseRoute] = []
    if settings.metrics is not None and not settings.http.disable_meta:
        route = metrics_route(settings.metrics, manager)
        (public_ops if settings.metrics_public else protected_ops).append(route)

    async def unmatched(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException) and exc.status_code == 404:
            response = invalid_ids.response(request)
            if response is not None:
                return response
        return await own_handler(request, exc)

    authentication = (
        []
        if authenticate is None
        else [Middleware(AuthMiddleware, authenticate=authenticate, public_paths=frozenset())]
    )
    return compose(
        first=[r for r in (*meta, *public_ops) if is_unshadowable(r, settings)],
        last=[r for r in (*meta, *public_ops) if not is_unshadowable(r, settings)],
        api=[
            *build_routes((*endpoints, *operators.ENDPOINTS), services),
            *protected_ops,
            *protocols.websocket_routes(services, endpoints),
        ],
        middleware=_middleware(settings),
        authentication=authentication,
        exception_handlers={HTTPException: unmatched},
        http=settings.http,
        authenticate_custom_routes=custom_routes_authenticated(settings),
    )
