"""langgraph.json's `http.disable_mcp`, `disable_a2a` and `disable_event_streaming` (and
`disable_runs`, which closes thread streaming too, as on LangGraph's server) turn the agent
protocols off: their routes are gone from the app and from /openapi.json."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.routing import WebSocketRoute

from runplane.api import ApiSettings, create_app
from runplane.api.http_config import parse_http_section
from runplane.api.settings import HttpConfig
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime

BASE_URL = "http://runplane.test"
THREAD = str(uuid.uuid4())
MCP = ("POST", "/mcp", "/mcp")
A2A = ("GET", "/a2a/echo", "/a2a/{assistant_id}")
COMMANDS = ("POST", f"/threads/{THREAD}/commands", "/threads/{thread_id}/commands")


def app_with(**switches: Any) -> tuple[httpx.AsyncClient, list[object]]:
    settings = replace(ApiSettings(), http=HttpConfig(**switches))
    app = create_app(memory_manager(), api_runtime(), settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL), list(app.routes)


@pytest.mark.parametrize(
    ("switches", "gone", "kept"),
    [
        ({"disable_mcp": True}, [MCP], [A2A, COMMANDS]),
        ({"disable_a2a": True}, [A2A], [MCP, COMMANDS]),
        ({"disable_event_streaming": True}, [COMMANDS], [MCP, A2A]),
        ({"disable_runs": True}, [COMMANDS], [MCP, A2A]),
        ({}, [], [MCP, A2A, COMMANDS]),
    ],
)
async def test_switches_turn_protocols_off(
    switches: dict[str, bool], gone: list[tuple[str, str, str]], kept: list[tuple[str, str, str]]
) -> None:
    client, routes = app_with(**switches)
    async with client:
        documented = (await client.get("/openapi.json")).json()["paths"]
        for method, path, template in gone:
            assert (await client.request(method, path, json={"id": 1, "method": "x"})).status_code in (
                404,
                405,
            )
            assert template not in documented
        for method, path, template in kept:
            assert (await client.request(method, path, json={"id": 1, "method": "x"})).status_code not in (
                404,
                405,
            )
            assert template in documented
    websockets = [r for r in routes if isinstance(r, WebSocketRoute)]
    assert bool(websockets) == (COMMANDS in kept)


def test_the_switches_are_read_from_langgraph_json(caplog: pytest.LogCaptureFixture) -> None:
    http = parse_http_section({"disable_mcp": True, "disable_a2a": False, "disable_event_streaming": True})
    assert (http.disable_mcp, http.disable_a2a, http.disable_event_streaming) == (True, False, True)
    assert "not supported" not in caplog.text
