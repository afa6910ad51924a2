"""Which browser origins may call the API: one `OriginPolicy`, asked by both the CORS middleware and
the cross-site guard, so a preflight that succeeds is never followed by a refused request (or the
reverse).

Origins are compared normalized: scheme and host in lower case, no trailing slash, no default port
(`https://app.example:443/` is `https://app.example`), which is how browsers send them. A refused
origin is logged once, naming the setting that would allow it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from runplane.api.settings import ApiSettings

logger = logging.getLogger(__name__)

#: Hosts a `runplane dev` on loopback accepts pages from, on any port.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: Refused origins remembered for log-once; beyond this many, further ones are not logged (a client
#: sending endless made-up origins must not grow memory or flood the log).
MAX_LOGGED_ORIGINS = 256


def _parts(origin: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port or None) of an origin, hosts in lower case and IPv6 in brackets."""
    try:
        split = urlsplit(origin.strip())
        port = split.port
    except ValueError:
        return None
    if not split.scheme or not split.hostname:
        return None
    host = split.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    scheme = split.scheme.lower()
    return scheme, host, port if port != _DEFAULT_PORTS.get(scheme) else None


def normalize_origin(origin: str) -> str:
    """`origin` as browsers send it: `HTTP://LocalHost:80/` is `http://localhost`.

    Text that is not `scheme://host[:port]` (`*`, `null`) is only stripped and lower-cased.
    """
    text = origin.strip().rstrip("/")
    parts = _parts(text)
    if parts is None:
        return text.lower()
    scheme, host, port = parts
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def origin_problem(origin: str) -> str | None:
    """Why `origin` can never match a browser's `Origin` header (None when it can)."""
    text = origin.strip().rstrip("/")
    if text == "*":
        return None
    try:
        split = urlsplit(text)
    except ValueError:
        split = None
    if split is None or _parts(text) is None:
        return f"{origin!r} is not an origin: write scheme://host[:port], e.g. http://localhost:3000"
    if split.path or split.query or split.fragment or split.username or split.password:
        return f"{origin!r} has more than an origin: write scheme://host[:port], without a path"
    return None


def _printable(origin: str) -> str:
    """The origin as it may appear in a log line: it is whatever a client sent."""
    return repr(origin[:200])


class OriginPolicy:
    """The browser origins allowed to call the API.

    Args:
        origins: allowed origins (`*`: every origin), normalized before comparing.
        regex: a pattern an allowed origin matches in full (`http.cors.allow_origin_regex`).
        allow_loopback: allow pages from any port of localhost, 127.0.0.1 and [::1].
        hint: the setting that allows an origin, named when one is refused (`{origin}` filled in).
    """

    def __init__(
        self,
        origins: Iterable[str] = (),
        *,
        regex: str | None = None,
        allow_loopback: bool = False,
        hint: str = "--cors-origins={origin} (RUNPLANE_CORS_ORIGINS)",
    ) -> None:
        self.origins = frozenset(normalize_origin(o) for o in origins)
        self.allow_all = "*" in self.origins
        self.regex = re.compile(regex) if regex else None
        self.allow_loopback = allow_loopback
        self.hint = hint
        self._logged: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether any cross-origin page may call the API (CORS headers are then needed)."""
        return bool(self.origins) or self.regex is not None or self.allow_loopback

    def allows(self, origin: str) -> bool:
        """Whether a page from `origin` (an `Origin` header) may call the API."""
        if self.allow_all:
            return True
        normalized = normalize_origin(origin)
        if normalized in self.origins:
            return True
        if self.regex is not None and (self.regex.fullmatch(origin) or self.regex.fullmatch(normalized)):
            return True
        if self.allow_loopback:
            parts = _parts(normalized)
            return parts is not None and parts[0] in ("http", "https") and parts[1] in LOOPBACK_HOSTS
        return False

    def advice(self, origin: str) -> str:
        """The setting that would allow `origin`."""
        return self.hint.format(origin=normalize_origin(origin))

    def refused(self, origin: str) -> None:
        """Log a refused origin, once per origin."""
        key = normalize_origin(origin)
        if key in self._logged or len(self._logged) >= MAX_LOGGED_ORIGINS:
            return
        self._logged.add(key)
        logger.warning(
            "refused cross-origin requests from %s; to allow them, set %s",
            _printable(key),
            self.advice(origin),
            extra={"action": "origin_refused", "origin": key},
        )


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a page from `origin` was served by this server, reached as `host` (the `Host` header).

    The scheme is not compared (behind a TLS proxy the server sees http); a `Host` without a port
    stands for the default port of the origin's scheme.
    """
    parts = _parts(origin.strip().rstrip("/"))
    if parts is None or not host:
        return False
    scheme, origin_host, origin_port = parts
    try:
        split = urlsplit(f"{scheme}://{host.strip()}")
        host_port = split.port
    except ValueError:
        return False
    host_name = (split.hostname or "").lower()
    if ":" in host_name:
        host_name = f"[{host_name}]"
    if host_port == _DEFAULT_PORTS.get(scheme):
        host_port = None
    return host_name == origin_host and host_port == origin_port


class PolicyCORSMiddleware(CORSMiddleware):
    """Starlette's `CORSMiddleware`, deciding origins by an `OriginPolicy` (the one the cross-site
    guard uses) instead of its own exact string match."""

    def __init__(self, app: ASGIApp, /, *, policy: OriginPolicy, **options: Any) -> None:
        options.pop("allow_origins", None)
        options.pop("allow_origin_regex", None)
        super().__init__(app, allow_origins=("*",) if policy.allow_all else (), **options)
        self.policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.allows(origin)

    def preflight_response(self, request_headers: Headers) -> Response:
        origin = request_headers["origin"]
        if not self.policy.allows(origin):
            self.policy.refused(origin)
        return super().preflight_response(request_headers)


def cors_setup(
    settings: ApiSettings, *, expose_headers: Sequence[str]
) -> tuple[OriginPolicy, dict[str, object]]:
    """Who may call from a browser, and the CORS options: `cors_origins` (flag or environment), else
    the langgraph.json's `http.cors`, else loopback pages when `cors_allow_loopback` (`runplane dev`
    on loopback)."""
    options: dict[str, object] = {
        "allow_methods": ["*"],
        "allow_headers": ["*"],
        "expose_headers": list(expose_headers),
    }
    cors = settings.http.cors
    if cors is not None:
        # LangGraph passes the section to Starlette's CORSMiddleware as is: its defaults fill the rest.
        options = {k: v for k, v in cors.items() if k not in ("allow_origins", "allow_origin_regex")}
    # Chrome asks before a public page (LangSmith Studio, say) calls a server on a private address;
    # `langgraph dev` says yes (ALLOW_PRIVATE_NETWORK), for the origins it allows.
    options["allow_private_network"] = settings.cors_allow_loopback
    if settings.cors_origins or cors is None:
        return OriginPolicy(
            settings.cors_origins,
            allow_loopback=settings.cors_allow_loopback and not settings.cors_origins,
            hint=settings.cors_hint,
        ), options
    return OriginPolicy(
        cors.get("allow_origins", ()),
        regex=cors.get("allow_origin_regex"),
        hint="{origin} in http.cors.allow_origins of langgraph.json (or --cors-origins)",
    ), options
