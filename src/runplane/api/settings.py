"""`ApiSettings`: the HTTP layer's knobs, separate from the process `Settings` so tests build apps
without touching the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runplane._version import VERSION

#: Who runs first on the custom app's routes: its own middleware (LangGraph's default) or authentication.
MiddlewareOrder = Literal["middleware_first", "auth_first"]


@dataclass(frozen=True, slots=True)
class HeaderRules:
    """Which request headers a run sees in `config["configurable"]` (langgraph.json's
    `http.configurable_headers`): lower-case names matching an `includes` pattern and no `excludes`
    one, where `*` matches anything. Credentials (`authorization`, `x-api-key`, ...) never pass."""

    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The `http` section of a langgraph.json, as LangGraph's server applies it."""

    #: The project's own Starlette (or FastAPI) application, served beside the API (`http.app`).
    app: Any = field(default=None, repr=False)
    #: Where `app` came from (`./webapp.py:app`), for messages.
    app_path: str | None = None
    disable_assistants: bool = False
    disable_threads: bool = False
    disable_runs: bool = False
    disable_store: bool = False
    disable_ui: bool = False
    #: Agent protocols (`api.protocols`): MCP at `/mcp`, A2A at `/a2a/...`, thread streaming v2
    #: (`/threads/{id}/commands`, `/threads/{id}/stream/events`; also off with `disable_runs`).
    disable_mcp: bool = False
    disable_a2a: bool = False
    disable_event_streaming: bool = False
    #: Drops `/info`, `/docs`, `/openapi.json` (and `/metrics`); `/ok` stays, answering `{"ok": true}`.
    disable_meta: bool = False
    #: Authenticate the custom app's routes too. None (not set): LangGraph custom auth leaves them
    #: public, as LangGraph's server does, and API keys (runplane's own scheme) still cover them.
    enable_custom_route_auth: bool | None = None
    middleware_order: MiddlewareOrder = "middleware_first"
    #: Serve everything under this path (`/my-api`); `/ok` also answers at the root.
    mount_prefix: str | None = None
    #: Starlette `CORSMiddleware` options (`allow_origins`, `allow_methods`, ...), as LangGraph passes them.
    cors: Mapping[str, Any] | None = None
    configurable_headers: HeaderRules | None = None


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the HTTP API behaves.

    The composition root builds this from the process `Settings` (`runplane.host.api_settings`: each
    knob here has its `RUNPLANE_*` variable there); tests pass small values (short heartbeats, tiny
    body limits) to exercise the edges quickly.
    """

    #: Request bodies larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = 10 * 2**20
    #: Idle seconds after which an SSE stream sends `: heartbeat` and a wait/join sends a newline,
    #: so proxies and clients do not time out a quiet run.
    heartbeat_seconds: float = 5.0
    #: What a streaming or waiting request does with its run when the client goes away, unless the
    #: request says otherwise (the SDK's `on_disconnect`).
    default_on_disconnect: Literal["cancel", "continue"] = "continue"
    #: Serve `/docs` (an HTML page loading Swagger UI from a CDN) next to `/openapi.json`.
    docs: bool = True
    #: Reported by `/info`.
    version: str = VERSION
    #: API key -> user identity. When set, every route but the public ones needs a key
    #: (`x-api-key`, or `Authorization: Bearer <key>`), and each user sees only their own threads.
    api_keys: Mapping[str, str] | None = field(default=None, repr=False)
    #: A `langgraph_sdk.Auth` (the `auth.path` of a langgraph.json): its `@auth.authenticate` names
    #: the user, its `@auth.on` handlers authorize each request. Exclusive with `api_keys`.
    custom_auth: Any = field(default=None, repr=False)
    #: Browser origins allowed to call the API (CORS); none by default. Given, they replace the
    #: origins of `http.cors` and the loopback default.
    cors_origins: tuple[str, ...] = ()
    #: Allow browser pages served from loopback (any port of localhost, 127.0.0.1, [::1]) when no
    #: origins are configured: `runplane dev` on loopback, as `langgraph dev` users expect.
    cors_allow_loopback: bool = False
    #: The setting that allows an origin, named when one is refused (`{origin}` is filled in).
    cors_hint: str = "--cors-origins={origin} (RUNPLANE_CORS_ORIGINS)"
    #: The langgraph.json `http` section: custom routes, route switches, CORS, configurable headers.
    http: HttpConfig = field(default_factory=HttpConfig)
    #: Longest a wait, join or stream request blocks before it answers (a wait's body is then a
    #: `TimeoutError` `__error__`; a stream just ends and can be joined again). None: no limit.
    max_wait_seconds: float | None = None
    #: Deepest nesting of arrays and objects accepted in a JSON body (422 beyond).
    max_json_depth: int = 64
    #: Largest total size of the request headers (431 beyond).
    max_header_bytes: int = 32 * 1024
    #: Prometheus metrics (`runplane.api.metrics.PrometheusMetrics`): served at `/metrics` and fed by
    #: an HTTP middleware; None serves no `/metrics`.
    metrics: Any = field(default=None, repr=False)
    #: Serve `/metrics` without authentication (for a scraper on a trusted network).
    metrics_public: bool = False
    #: Serve the dashboard at `/ui` (static files; it calls the API with the key the user enters).
    ui: bool = True
