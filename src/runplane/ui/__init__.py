"""The dashboard (`/ui`): three static files shipped in the wheel, served as they are (no build step).

The page is a client of the public HTTP API like any other: it asks for an API key, keeps it in
`sessionStorage` and sends it with every call, so it works against any runplane process and shows a
user only what the API shows them. Only the static files are public; every call they make is
authenticated.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

#: The files under `static/` and their media types.
FILES: Mapping[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
#: Every path the dashboard serves (all public: the page holds no data, the API calls carry the key).
UI_PATHS = frozenset({"/ui", "/ui/", *(f"/ui/{name}" for name in FILES)})

#: Same-origin scripts, styles and API calls only; never framed (clickjacking a cancel button).
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


@functools.cache
def _content(name: str) -> bytes:
    return (files(__package__) / "static" / name).read_bytes()


def ui_routes() -> list[BaseRoute]:
    """`/ui` (redirects to `/ui/`, so the page's relative URLs resolve under any mount prefix),
    `/ui/` and the static files."""

    async def redirect(request: Request) -> Response:
        return RedirectResponse("ui/", status_code=308)

    async def static(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        if name not in FILES:
            return Response("Not Found", status_code=404, media_type="text/plain")
        return Response(_content(name), media_type=FILES[name], headers=_HEADERS)

    return [
        Route("/ui", redirect, methods=["GET"]),
        Route("/ui/", static, methods=["GET"]),
        Route("/ui/{name}", static, methods=["GET"]),
    ]
