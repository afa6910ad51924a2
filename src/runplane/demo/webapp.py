"""The demo project's own HTTP app (`http.app` in `langgraph_http.json`), served beside the API.

Any Starlette or FastAPI application works. Its routes come before the API's (so they may shadow
one), its middleware wraps every request, and its lifespan runs with the server:

- `GET /hello`: a custom route (it says whether the app's lifespan has run);
- `GET /me`: the authenticated caller, as LangGraph's server shows it to custom routes
  (`request.user`; with API keys, or with custom auth and `http.enable_custom_route_auth`);
- every response carries `x-served-by: runplane-demo`, API responses included.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServedBy:
    """Stamps every response, to show that the project's middleware wraps the API too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-served-by", b"runplane-demo")]
            await send(message)

        await self.app(scope, receive, stamped if scope["type"] == "http" else send)


async def hello(request: Request) -> Response:
    return JSONResponse({"hello": "world", "started": getattr(request.app.state, "started", False)})


async def me(request: Request) -> Response:
    user = request.scope.get("user")
    return JSONResponse({"identity": getattr(user, "identity", None)})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.started = True
    yield


app = Starlette(
    routes=[Route("/hello", hello), Route("/me", me)],
    middleware=[Middleware(ServedBy)],
    lifespan=lifespan,
)
