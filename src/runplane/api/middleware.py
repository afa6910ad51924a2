"""Request hygiene before any route runs: a bound on header size, and no cross-site writes.

Browsers let any web page send "simple" cross-origin requests (forms, `text/plain` bodies) without
asking the server first; CORS only stops the page from reading the answer. A server on loopback
without authentication would otherwise run whatever a malicious page posts to it. So a request
that carries an `Origin` header (browsers set it on cross-origin requests; the SDK and curl never
do) is refused unless that origin is the server's own or one configured for CORS.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runplane.api.errors import REQUEST_ID, error_response, server_error
from runplane.api.origins import OriginPolicy, same_origin


class HeaderLimit:
    """Answers 431 when the request headers add up to more than `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))
            if size > self.max_bytes:
                response = error_response(431, f"Request headers exceed {self.max_bytes} bytes")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class OriginGuard:
    """Refuses (403) requests from a browser page whose origin is neither this server nor one
    `policy` allows (the policy the CORS middleware answers preflights with)."""

    def __init__(self, app: ASGIApp, *, policy: OriginPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or OriginPolicy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers", ()))
            origin_header = headers.get(b"origin")
            if origin_header is not None:
                origin = origin_header.decode("latin-1")
                host = headers.get(b"host")
                if not same_origin(origin, host.decode("latin-1") if host else None) and not (
                    self.policy.allows(origin)
                ):
                    self.policy.refused(origin)
                    response = error_response(
                        403,
                        f"Cross-origin request refused: allow this origin with {self.policy.advice(origin)}",
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


#: A request id a client or proxy may set (`X-Request-Id`): short, and nothing a log could misread.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    """Gives every request an id (the client's `X-Request-Id` when sane, else a new one), echoes it
    in the response's `X-Request-Id`, and answers anything that escaped the handlers with a logged,
    generic 500 that names it (Starlette's default would be a bare text body and no log of ours)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise  # too late for an error response: the server closes the connection
            await server_error(500, "Internal Server Error", exc)(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
