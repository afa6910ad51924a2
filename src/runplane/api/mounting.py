"""How the API's routes, the project's own app (langgraph.json `http.app`) and the middleware are
put together, with LangGraph's precedence:

1. `/ok`, `/docs`, `/openapi.json`: cannot be shadowed;
2. the custom app's routes: they shadow what follows (a custom `GET /threads/{thread_id}` answers
   instead of the API's, while the API still serves the methods the custom route does not take);
3. `/info`;
4. the API (assistants, threads, runs), behind authentication.

As on LangGraph's server, the custom app is the application that is served: its middleware wraps
everything (or, with `middleware_order: auth_first`, runs after authentication, route by route),
its lifespan runs, and its exception handlers win over the API's.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from starlette.applications import Starlette
from starlette.authentication import AuthCredentials
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from runplane.api.auth import USER_SCOPE_KEY
from runplane.api.routing import Endpoint
from runplane.api.settings import ApiSettings, HttpConfig
from runplane.core.errors import InvalidInput

logger = logging.getLogger(__name__)

#: Custom apps already composed: composing one twice would nest the API inside itself.
_COMPOSED: weakref.WeakSet[Starlette] = weakref.WeakSet()


class ExposeUser:
    """Names the authenticated caller where Starlette's `AuthenticationMiddleware` would
    (`request.user`, `request.auth`), which is how custom routes written for LangGraph read it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get(USER_SCOPE_KEY)
        if user is not None:
            scope["user"] = user
            scope["auth"] = AuthCredentials(list(getattr(user, "permissions", ()) or ()))
        await self.app(scope, receive, send)


#: Which langgraph.json `http.disable_*` switch turns a route off, by its first path segment.
_SECTIONS = {
    "assistants": "assistants",
    "threads": "threads",
    "runs": "runs",
    "store": "store",
    "ui": "ui",
    "mcp": "mcp",
    "a2a": "a2a",
}
#: Thread streaming v2 routes (`api.protocols.thread_stream`), by their segment after the thread id.
_EVENT_STREAMING = frozenset({"commands", "stream"})
#: Routes a custom app cannot shadow; the other system routes come after its routes.
_UNSHADOWABLE = frozenset({"/ok", "/docs", "/openapi.json", "/metrics"})


def _section(path: str) -> str | None:
    """The API section of a route, as LangGraph groups them (a thread's runs are `runs`)."""
    parts = path.split("/")
    if parts[1] == "threads" and len(parts) > 3 and parts[3] == "runs":
        return "runs"
    if parts[1] == "threads" and len(parts) > 3 and parts[3] in _EVENT_STREAMING:
        return "event_streaming"
    return _SECTIONS.get(parts[1])


def enabled_endpoints(endpoints: Sequence[Endpoint], settings: ApiSettings) -> tuple[Endpoint, ...]:
    """`endpoints` without those the langgraph.json's `http.disable_*` switches turn off."""
    http = settings.http
    disabled = {
        name
        for name, off in (
            ("assistants", http.disable_assistants),
            ("threads", http.disable_threads),
            ("runs", http.disable_runs),
            ("store", http.disable_store),
            ("ui", http.disable_ui),
            ("mcp", http.disable_mcp),
            ("a2a", http.disable_a2a),
            # As on LangGraph's server, `disable_runs` also closes thread streaming: its commands
            # create runs.
            ("event_streaming", http.disable_event_streaming or http.disable_runs),
        )
        if off
    }
    return tuple(e for e in endpoints if _section(e.path) not in disabled)


async def bare_ok(request: Request) -> Response:
    # `disable_meta` keeps /ok so an operator still sees the server is up; it says nothing more.
    return JSONResponse({"ok": True})


def custom_routes_authenticated(settings: ApiSettings) -> bool:
    """LangGraph authenticates custom routes only with `enable_custom_route_auth`; API keys (which
    LangGraph does not have) cover them unless it is set to false."""
    http = settings.http
    if http.enable_custom_route_auth is not None:
        return http.enable_custom_route_auth
    if http.app is not None and settings.custom_auth is not None:
        logger.info(
            "custom routes of %s are not authenticated (as on LangGraph's server); set "
            "http.enable_custom_route_auth to true to run the auth handler on them",
            http.app_path,
            extra={"action": "config"},
        )
    return settings.api_keys is not None


def is_unshadowable(route: BaseRoute, settings: ApiSettings) -> bool:
    """Whether a system route comes before the custom app's routes (with `disable_meta`, LangGraph
    lets the bare `/ok` be shadowed)."""
    return not settings.http.disable_meta and getattr(route, "path", None) in _UNSHADOWABLE


def custom_http_exception_handler(
    http: HttpConfig,
) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The custom app's own handler of HTTP errors (FastAPI has one), as an async function."""
    handler = http.app.exception_handlers.get(HTTPException) if isinstance(http.app, Starlette) else None
    if handler is None:
        return None

    async def handle(request: Request, exc: Exception) -> Response:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        return cast(Response, response)

    return handle


def _wrap(app: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


def apply_middleware(routes: Sequence[BaseRoute], middleware: Sequence[Middleware]) -> list[BaseRoute]:
    """`routes`, each running `middleware` (outermost first) once it is matched (in place)."""
    if middleware:
        for route in routes:
            inner = getattr(route, "app", None)
            if inner is None:
                raise InvalidInput(f"cannot apply middleware to the route {route!r}: it has no app")
            route.app = _wrap(inner, middleware)  # type: ignore[attr-defined]
    return list(routes)


def compose(
    *,
    first: Sequence[BaseRoute],
    last: Sequence[BaseRoute],
    api: Sequence[BaseRoute],
    middleware: Sequence[Middleware],
    authentication: Sequence[Middleware],
    exception_handlers: Mapping[Any, Any],
    http: HttpConfig,
    authenticate_custom_routes: bool,
) -> Starlette:
    """The served application.

    Args:
        first: routes nothing shadows; last: routes the custom app may shadow; api: the API's routes.
        middleware: around every request, outermost first.
        authentication: run on the API's routes, on requests no route matches (so an unknown path
            is a 401 to a stranger, not a map of what exists), and on custom routes if asked.
        exception_handlers: the API's.
        http: the langgraph.json `http` section, with the loaded custom app.
        authenticate_custom_routes: run `authentication` on the custom app's routes too.

    Raises:
        InvalidInput: the custom app has already served requests, or was composed already.
    """
    custom = http.app
    if custom is None:
        app = Starlette(
            routes=[*first, *last, *apply_middleware(api, authentication)],
            middleware=middleware,
            exception_handlers=dict(exception_handlers),
        )
        app.router.default = _wrap(app.router.default, authentication)
        return _under_prefix(app, http.mount_prefix, [*first, *last])

    if not isinstance(custom, Starlette):
        raise InvalidInput(
            f"http.app {http.app_path!r} is a {type(custom).__name__}, not a Starlette or FastAPI app"
        )
    if custom.middleware_stack is not None or custom in _COMPOSED:
        raise InvalidInput(
            f"http.app {http.app_path!r} has already been started; runplane must serve it itself"
        )
    _COMPOSED.add(custom)
    own_middleware = list(custom.user_middleware)
    # auth_first: the custom middleware runs inside each route, after authentication.
    route_level = own_middleware if http.middleware_order == "auth_first" else []
    custom_auth = [*authentication, Middleware(ExposeUser)] if authenticate_custom_routes else []
    custom.router.routes = [
        *apply_middleware(first, route_level),
        *apply_middleware(custom.router.routes, [*custom_auth, *route_level]),
        *apply_middleware(last, route_level),
        *apply_middleware(api, [*authentication, *route_level]),
    ]
    custom.router.default = _wrap(custom.router.default, [*authentication, *route_level])
    custom.user_middleware = [*([] if route_level else own_middleware), *middleware]
    # The app's own handlers win, but for HTTP errors: the API's answers its 404s and 405s (a bad
    # thread id is a 422, as on LangGraph's server) and passes the rest to the app's (see
    # `custom_http_exception_handler`).
    for key, handler in exception_handlers.items():
        if key is HTTPException or key not in custom.exception_handlers:
            custom.exception_handlers[key] = handler
    return _under_prefix(custom, http.mount_prefix, [*first, *last])


def _under_prefix(app: Starlette, prefix: str | None, meta: Sequence[BaseRoute]) -> Starlette:
    """`app` under `prefix`, with the health check also at the root (load balancers probe there),
    sharing the app's lifespan and state, as LangGraph's `mount_prefix` does."""
    if prefix is None:
        return app
    health = [route for route in meta if getattr(route, "path", None) == "/ok"]
    outer = Starlette(
        routes=[*health, Mount(prefix, app=app)],
        lifespan=app.router.lifespan_context,
        exception_handlers=app.exception_handlers,
    )
    outer.state = app.state
    return outer
