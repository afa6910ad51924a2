"""The langgraph.json `http` section over real HTTP: a project's own app served beside the API with
LangGraph's precedence, the `disable_*` switches, authentication of custom routes, `mount_prefix`,
`http.cors`, `configurable_headers`, and origins matched alike by CORS and the cross-site guard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from langgraph_sdk import Auth, get_client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runplane.api import ApiSettings, create_app
from runplane.api.http_config import parse_http_section
from runplane.api.settings import HttpConfig
from runplane.testing import memory_manager
from tests.api._support import serve
from tests.api.conftest import api_runtime, api_worker

KEYS = {"sk-alice": "alice"}
ALICE = {"x-api-key": "sk-alice"}


class Stamp:
    """The project's middleware: marks every response it wraps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-stamp", b"1")]
            await send(message)

        await self.app(scope, receive, stamped)


def custom_app(**routes: Callable[[Request], Any]) -> Starlette:
    """A project's app: `GET /hello`, `GET /me`, and `routes` ("GET /path": handler)."""

    async def hello(request: Request) -> Response:
        return JSONResponse({"hello": "world"})

    async def me(request: Request) -> Response:
        user = request.user if "user" in request.scope else None
        return JSONResponse({"identity": getattr(user, "identity", None)})

    extra = []
    for spec, handler in routes.items():
        method, path = spec.split(" ", 1)
        extra.append(Route(path, handler, methods=[method]))
    return Starlette(
        routes=[Route("/hello", hello), Route("/me", me), *extra],
        middleware=[Middleware(Stamp)],
    )


def answer(name: str) -> Callable[[Request], Any]:
    async def handler(request: Request) -> Response:
        return JSONResponse({"custom": name, **request.path_params})

    return handler


@asynccontextmanager
async def served(settings: ApiSettings, *, worker: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    """The app over a real loopback socket (uvicorn), with a client for it."""
    manager = memory_manager()
    runtime = api_runtime()
    run_worker = api_worker(manager, runtime)
    if worker:
        await run_worker.start()
    try:
        async with (
            serve(create_app(manager, runtime, settings)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            yield client
    finally:
        if worker:
            await run_worker.stop()


def with_http(settings: ApiSettings | None = None, **http: Any) -> ApiSettings:
    return replace(settings or ApiSettings(), http=HttpConfig(**http))


# -- the custom app --------------------------------------------------------------------------------


async def test_custom_routes_are_served_beside_the_api() -> None:
    async with served(with_http(app=custom_app(), app_path="./webapp.py:app")) as client:
        hello = await client.get("/hello")
        assert hello.status_code == 200 and hello.json() == {"hello": "world"}
        thread = await client.post("/threads", json={})
        assert thread.status_code == 200 and "thread_id" in thread.json()
        assert (await client.get("/ok")).json()["ok"] is True
        # The project's middleware wraps the API too, as on LangGraph's server.
        assert hello.headers["x-stamp"] == "1" and thread.headers["x-stamp"] == "1"
        assert (await client.get("/nowhere")).status_code == 404


async def test_custom_routes_shadow_the_api_but_not_the_health_check_or_docs() -> None:
    app = custom_app(
        **{
            "GET /ok": answer("ok"),
            "GET /docs": answer("docs"),
            "GET /openapi.json": answer("openapi"),
            "GET /info": answer("info"),
            "GET /threads/{thread_id}": answer("thread"),
        }
    )
    async with served(with_http(app=app)) as client:
        assert (await client.get("/ok")).json()["ok"] is True
        assert "openapi" in (await client.get("/openapi.json")).json()
        assert "swagger" in (await client.get("/docs")).text.lower()
        assert (await client.get("/info")).json() == {"custom": "info"}
        thread_id = (await client.post("/threads", json={})).json()["thread_id"]
        shadowed = await client.get(f"/threads/{thread_id}")
        assert shadowed.json() == {"custom": "thread", "thread_id": thread_id}
        # The methods the custom route does not take still reach the API.
        assert (await client.patch(f"/threads/{thread_id}", json={"metadata": {"a": 1}})).status_code == 200
        assert (await client.delete(f"/threads/{thread_id}")).status_code == 204
        assert (await client.post("/threads/count", json={})).json() == 0


@pytest.mark.parametrize(
    ("switch", "gone", "kept"),
    [
        ("disable_assistants", ("POST", "/assistants/search"), ("POST", "/threads/search")),
        ("disable_threads", ("POST", "/threads/search"), ("POST", "/assistants/search")),
        ("disable_runs", ("POST", "/runs/wait"), ("POST", "/threads/search")),
    ],
)
async def test_disable_switches(switch: str, gone: tuple[str, str], kept: tuple[str, str]) -> None:
    switches: dict[str, Any] = {switch: True}
    async with served(with_http(**switches)) as client:
        assert (await client.request(gone[0], gone[1], json={})).status_code in (404, 405)
        assert (await client.request(kept[0], kept[1], json={})).status_code == 200
        documented = (await client.get("/openapi.json")).json()["paths"]
        assert gone[1] not in documented and kept[1] in documented


async def test_disable_runs_takes_a_threads_runs_with_it() -> None:
    async with served(with_http(disable_runs=True)) as client:
        thread_id = (await client.post("/threads", json={})).json()["thread_id"]
        assert (await client.get(f"/threads/{thread_id}")).status_code == 200
        assert (await client.get(f"/threads/{thread_id}/runs")).status_code == 404
        created = await client.post(f"/threads/{thread_id}/runs", json={"assistant_id": "echo"})
        assert created.status_code == 404


async def test_disable_meta_keeps_a_bare_health_check() -> None:
    async with served(with_http(disable_meta=True)) as client:
        ok = await client.get("/ok")
        assert ok.status_code == 200 and ok.json() == {"ok": True}
        for path in ("/info", "/docs", "/openapi.json"):
            assert (await client.get(path)).status_code == 404, path
        assert (await client.post("/threads", json={})).status_code == 200


# -- authentication of custom routes ------------------------------------------------------------------


async def test_api_keys_cover_custom_routes() -> None:
    async with served(with_http(ApiSettings(api_keys=KEYS), app=custom_app())) as client:
        assert (await client.get("/hello")).status_code == 401
        assert (await client.get("/hello", headers={"x-api-key": "sk-wrong"})).status_code == 401
        assert (await client.get("/hello", headers=ALICE)).status_code == 200
        # The caller, where custom routes written for LangGraph read it: `request.user`.
        assert (await client.get("/me", headers=ALICE)).json() == {"identity": "alice"}
        assert (await client.post("/threads", json={})).status_code == 401
        assert (await client.get("/ok")).status_code == 200


async def test_custom_routes_can_opt_out_of_api_keys() -> None:
    settings = with_http(ApiSettings(api_keys=KEYS), app=custom_app(), enable_custom_route_auth=False)
    async with served(settings) as client:
        assert (await client.get("/hello")).status_code == 200
        assert (await client.post("/threads", json={})).status_code == 401  # the API stays closed


def _auth() -> Auth:
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> str:
        if authorization != "Bearer token-alice":
            raise Auth.exceptions.HTTPException(status_code=401, detail="who are you?")
        return "alice"

    return auth


async def test_langgraph_custom_auth_covers_custom_routes_only_when_asked() -> None:
    bearer = {"Authorization": "Bearer token-alice"}
    # LangGraph's default: custom routes are public, the API is not.
    async with served(with_http(ApiSettings(custom_auth=_auth()), app=custom_app())) as client:
        assert (await client.get("/hello")).status_code == 200
        assert (await client.get("/me")).json() == {"identity": None}
        assert (await client.post("/threads/search", json={})).status_code == 401
        assert (await client.post("/threads/search", json={}, headers=bearer)).status_code == 200
    settings = with_http(ApiSettings(custom_auth=_auth()), app=custom_app(), enable_custom_route_auth=True)
    async with served(settings) as client:
        refused = await client.get("/hello")
        assert refused.status_code == 401 and refused.json()["detail"] == "who are you?"
        assert (await client.get("/me", headers=bearer)).json() == {"identity": "alice"}


async def test_middleware_order() -> None:
    # middleware_first (LangGraph's default): the project's middleware sees every request, even one
    # authentication refuses; auth_first: it runs only on requests that passed authentication.
    async with served(with_http(ApiSettings(api_keys=KEYS), app=custom_app())) as client:
        assert (await client.post("/threads", json={})).headers.get("x-stamp") == "1"
    settings = with_http(ApiSettings(api_keys=KEYS), app=custom_app(), middleware_order="auth_first")
    async with served(settings) as client:
        refused = await client.post("/threads", json={})
        assert refused.status_code == 401 and "x-stamp" not in refused.headers
        accepted = await client.post("/threads", json={}, headers=ALICE)
        assert accepted.status_code == 200 and accepted.headers["x-stamp"] == "1"
        assert (await client.get("/hello", headers=ALICE)).headers["x-stamp"] == "1"


async def test_a_fastapi_app() -> None:
    app = FastAPI()

    async def token(x_token: str = Header(default="none")) -> str:
        return x_token

    @app.get("/items/{item_id}")
    async def item(item_id: int, token: str = Depends(token)) -> dict[str, Any]:
        if item_id == 0:
            raise HTTPException(418, "teapot")
        return {"item_id": item_id, "token": token}

    async with served(with_http(ApiSettings(api_keys=KEYS), app=app)) as client:
        assert (await client.get("/items/3", headers={**ALICE, "x-token": "t"})).json() == {
            "item_id": 3,
            "token": "t",
        }
        # FastAPI's own validation and error handlers answer for its routes...
        assert (await client.get("/items/x", headers=ALICE)).json()["detail"][0]["type"] == "int_parsing"
        teapot = await client.get("/items/0", headers=ALICE)
        assert teapot.status_code == 418 and teapot.json() == {"detail": "teapot"}
        assert (await client.get("/items/3")).status_code == 401
        # ...and the API keeps its contract: a malformed thread id is a 422, not FastAPI's 404.
        malformed = await client.get("/threads/not-a-uuid", headers=ALICE)
        assert malformed.status_code == 422 and "must be a UUID" in malformed.json()["detail"]
        assert (await client.get("/nowhere", headers=ALICE)).status_code == 404
        assert (await client.get("/nowhere")).status_code == 401  # strangers learn nothing
        assert (await client.post("/threads", json={}, headers=ALICE)).status_code == 200


async def test_a_custom_app_is_composed_once() -> None:
    app = custom_app()
    create_app(memory_manager(), api_runtime(), with_http(app=app))
    with pytest.raises(Exception, match="already been started"):
        create_app(memory_manager(), api_runtime(), with_http(app=app))


# -- mount prefix -------------------------------------------------------------------------------------


async def test_mount_prefix_serves_everything_under_it() -> None:
    async with served(with_http(app=custom_app(), mount_prefix="/lg")) as client:
        assert (await client.get("/lg/hello")).json() == {"hello": "world"}
        assert (await client.get("/ok")).status_code == 200  # load balancers probe the root
        assert (await client.get("/lg/ok")).status_code == 200
        assert (await client.post("/threads", json={})).status_code == 404
        sdk = get_client(url=str(client.base_url.join("/lg")), api_key=None)
        thread = await sdk.threads.create()
        assert (await sdk.threads.get(thread["thread_id"]))["thread_id"] == thread["thread_id"]


async def test_locations_carry_the_prefix() -> None:
    async with served(with_http(mount_prefix="/lg"), worker=True) as client:
        thread_id = (await client.post("/lg/threads", json={})).json()["thread_id"]
        created = await client.post(f"/lg/threads/{thread_id}/runs", json={"assistant_id": "echo"})
        assert created.headers["content-location"].startswith(f"/lg/threads/{thread_id}/runs/")


# -- configurable headers -------------------------------------------------------------------------------


async def test_configurable_headers_are_stored_with_the_run() -> None:
    http = parse_http_section(
        {"configurable_headers": {"includes": ["x-user-*"], "excludes": ["x-user-secret"]}}
    )
    headers = {"x-user-id": "alice", "x-user-secret": "s", "x-other": "o", **ALICE}
    async with served(replace(ApiSettings(api_keys=KEYS), http=http)) as client:
        thread_id = (await client.post("/threads", json={}, headers=ALICE)).json()["thread_id"]
        run = (
            await client.post(
                f"/threads/{thread_id}/runs",
                json={"assistant_id": "echo", "config": {"configurable": {"x-user-id": "body", "k": 1}}},
                headers=headers,
            )
        ).json()
        # The header wins over the body's key, as on LangGraph's server; credentials never pass.
        configurable = run["kwargs"]["config"]["configurable"]
        assert configurable["x-user-id"] == "alice" and configurable["k"] == 1
        assert not {"x-user-secret", "x-other", "x-api-key"} & set(configurable)


async def test_without_rules_no_header_is_stored() -> None:
    async with served(ApiSettings()) as client:
        thread_id = (await client.post("/threads", json={})).json()["thread_id"]
        run = (
            await client.post(
                f"/threads/{thread_id}/runs", json={"assistant_id": "echo"}, headers={"x-user-id": "alice"}
            )
        ).json()
        assert "x-user-id" not in str(run["kwargs"])


# -- CORS ------------------------------------------------------------------------------------------------


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type",
    }


@pytest.mark.parametrize(
    ("configured", "browser"),
    [
        ("http://localhost:3000/", "http://localhost:3000"),
        ("HTTP://LocalHost:3000", "http://localhost:3000"),
        ("https://app.example:443", "https://app.example"),
    ],
)
async def test_cors_and_the_guard_agree_on_normalized_origins(configured: str, browser: str) -> None:
    async with served(ApiSettings(cors_origins=(configured,))) as client:
        answered = await client.options("/threads", headers=preflight(browser))
        assert answered.status_code == 200
        assert answered.headers["access-control-allow-origin"] == browser
        created = await client.post("/threads", json={}, headers={"Origin": browser})
        assert created.status_code == 200
        assert created.headers["access-control-allow-origin"] == browser


async def test_loopback_pages_when_allowed() -> None:
    async with served(ApiSettings(cors_allow_loopback=True)) as client:
        for origin in ("http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080"):
            answered = await client.options("/threads/search", headers=preflight(origin))
            assert answered.status_code == 200, origin
            assert answered.headers["access-control-allow-origin"] == origin
            assert (
                await client.post("/threads/search", json={}, headers={"Origin": origin})
            ).status_code == 200
        evil = "https://evil.example"
        assert (await client.options("/threads/search", headers=preflight(evil))).status_code == 400
        refused = await client.post("/threads/search", json={}, headers={"Origin": evil})
        assert (
            refused.status_code == 403 and "--cors-origins=https://evil.example" in refused.json()["detail"]
        )


async def test_explicit_origins_replace_the_loopback_default() -> None:
    async with served(ApiSettings(cors_allow_loopback=True, cors_origins=("https://app.example",))) as client:
        assert (
            await client.options("/threads", headers=preflight("http://localhost:5173"))
        ).status_code == 400
        assert (await client.options("/threads", headers=preflight("https://app.example"))).status_code == 200


async def test_http_cors_section_as_langgraph_applies_it() -> None:
    http = parse_http_section(
        {
            "cors": {
                "allow_origins": ["https://app.example/"],
                "allow_origin_regex": r"https://pr-\d+\.app\.example",
                "allow_methods": ["GET", "POST"],
                "allow_headers": ["content-type"],
            }
        }
    )
    async with served(ApiSettings(cors_allow_loopback=True, http=http)) as client:
        for origin in ("https://app.example", "https://pr-12.app.example"):
            assert (await client.options("/threads", headers=preflight(origin))).status_code == 200, origin
            assert (await client.post("/threads", json={}, headers={"Origin": origin})).status_code == 200
        # Starlette's CORS options, as given: DELETE is not among the allowed methods.
        assert (
            await client.options("/threads", headers=preflight("https://app.example", "DELETE"))
        ).status_code == 400
        # The section replaces the loopback default, as it replaces LangGraph's `*`.
        assert (
            await client.options("/threads", headers=preflight("http://localhost:5173"))
        ).status_code == 400
        refused = await client.post("/threads", json={}, headers={"Origin": "http://localhost:5173"})
        assert refused.status_code == 403 and "http.cors.allow_origins" in refused.json()["detail"]
