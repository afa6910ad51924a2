"""`ApiSettings`: the HTTP layer's knobs, separate from the process `Settings` so tests build apps
without touching the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the HTTP API behaves.

    The CLI builds this from the process `Settings`; tests pass small values (short heartbeats, tiny
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
    version: str = "0.1.0"
    #: API key -> user identity. When set, every route but the public ones needs a key
    #: (`x-api-key`, or `Authorization: Bearer <key>`), and each user sees only their own threads.
    api_keys: Mapping[str, str] | None = field(default=None, repr=False)
    #: A `langgraph_sdk.Auth` (the `auth.path` of a langgraph.json): its `@auth.authenticate` names
    #: the user, its `@auth.on` handlers authorize each request. Exclusive with `api_keys`.
    custom_auth: Any = field(default=None, repr=False)
    #: Browser origins allowed to call the API (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
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
