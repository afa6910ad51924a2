"""`ApiSettings`: the HTTP layer's knobs, separate from the process `Settings` so tests build apps
without touching the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
