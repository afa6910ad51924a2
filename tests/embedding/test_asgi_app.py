"""`rp.asgi_app()`: mountable before the runtime opens, 503 while it is closed, its own lifespan
when served alone, and the host's authentication."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
from langgraph_sdk import get_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from runplane.testing import memory_runtime
from tests.embedding._support import serve
from tests.embedding.test_library import GRAPHS


async def test_requests_before_the_runtime_opens_get_503_not_a_crash() -> None:
    rp = memory_runtime(GRAPHS)
    app = Starlette(routes=[Mount("/agents", rp.asgi_app())])  # no lifespan: nobody opens it
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host") as client:
        response = await client.post("/agents/threads", json={})
        assert response.status_code == 503
        assert "not running" in response.json()["detail"]
        async with rp:
            assert (await client.post("/agents/threads", json={})).status_code == 200
        assert (await client.post("/agents/threads", json={})).status_code == 503  # closed again


async def test_served_alone_the_api_opens_and_closes_the_runtime_with_the_servers_lifespan() -> None:
    rp = memory_runtime(GRAPHS, burst=False)
    async with serve(rp.asgi_app()) as client:
        sdk = get_client(url=str(client.base_url), api_key=None)
        thread = await sdk.threads.create()
        result = await sdk.runs.wait(
            thread["thread_id"], "agent", input=cast(dict[str, Any], {"log": ["alone"]})
        )
        assert result == {"log": ["alone", "step"], "gate": ""}
    with pytest.raises(RuntimeError, match="not open"):
        _ = rp.runs


async def test_an_async_authenticate_callable_names_the_user_and_none_refuses() -> None:
    async def who(request: Request) -> str | None:
        return request.headers.get("x-user")

    rp = memory_runtime(GRAPHS)
    app = Starlette(routes=[Mount("/agents", rp.asgi_app(authenticate=who))], lifespan=rp.lifespan)
    async with serve(app) as client:
        assert (await client.post("/agents/threads", json={})).status_code == 401
        created = await client.post("/agents/threads", json={}, headers={"x-user": "carol"})
        thread_id = created.json()["thread_id"]
        # The identity the host named is the `user` of the library calls.
        assert (await rp.threads.get(thread_id, user="carol")).owner == "carol"
        assert (
            await client.get(f"/agents/threads/{thread_id}", headers={"x-user": "dave"})
        ).status_code == 404


def test_authenticate_and_api_keys_are_exclusive() -> None:
    from runplane.api.settings import ApiSettings

    rp = memory_runtime(GRAPHS)
    with pytest.raises(ValueError, match="not both"):
        rp.asgi_app(authenticate=lambda request: "x", api_settings=ApiSettings(api_keys={"k": "u"}))
