"""MCP at `/mcp` through the official `mcp` client over real HTTP: the handshake, assistants as
tools with their graphs' input schemas, a call that runs a stateless run, and the error paths."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import serve
from tests.e2e.test_sdk_api import GRAPHS

KEY = {"x-api-key": "key-alice"}


@pytest.fixture
async def manager() -> RunManager:
    return memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))


@pytest.fixture
async def url(manager: RunManager) -> AsyncIterator[str]:
    runtime = LangGraphRuntime(GRAPHS, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=2, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(api_keys={"key-alice": "alice"}))
    try:
        async with serve(app) as base:
            yield base
    finally:
        await worker.stop()


@contextlib.asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with httpx2.AsyncClient(headers=headers if headers is not None else KEY, timeout=30) as http:
        # `legacy` speaks the initialize handshake, as MCP clients of LangGraph's server do.
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http), mode="legacy") as client:
            yield client


async def test_initialize_names_the_server_and_its_tools_capability(url: str) -> None:
    async with mcp_client(url) as client:
        assert client.server_info is not None
        assert client.server_info.name == "LangGraph"
        assert client.server_capabilities.tools is not None
        assert client.protocol_version


async def test_each_assistant_is_a_tool_with_its_graphs_input_schema(url: str) -> None:
    async with mcp_client(url) as client:
        listed = await client.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == set(GRAPHS)
    echo = tools["echo"]
    assert echo.title == "echo"
    assert echo.description == "Tool based on the echo assistant"
    assert echo.input_schema["type"] == "object"
    assert echo.input_schema["properties"]["n"] == {"title": "N", "type": "integer"}
    # LangChain message lists are offered to the model as one user message.
    chat = tools["chat"].input_schema
    assert chat["properties"]["messages"]["type"] == "string"
    assert "HumanMessage" not in str(chat)
    assert tools["ticker"].input_schema["properties"]["n"]["type"] == "integer"
    assert listed.next_cursor is None


async def test_calling_a_tool_runs_the_assistant_statelessly(url: str) -> None:
    async with mcp_client(url) as client:
        result = await client.call_tool("ticker", {"n": 3})
    assert not result.is_error
    [content] = result.content
    assert content.type == "text"
    assert content.text == repr({"n": 3, "ticks": [0, 1, 2]})
    # Stateless: the run's temporary thread is gone.
    async with httpx.AsyncClient(base_url=url, headers=KEY) as http:
        assert (await http.post("/threads/search", json={})).json() == []


async def test_a_failing_graph_is_a_tool_error_naming_the_failure(url: str) -> None:
    async with mcp_client(url) as client:
        result = await client.call_tool("failer", {"x": 1})
    assert result.is_error
    assert result.content[0].text == "ValueError: boom!"  # type: ignore[union-attr]


async def test_an_unknown_tool_is_a_json_rpc_invalid_params_error(url: str) -> None:
    async with mcp_client(url) as client:
        with pytest.raises(MCPError) as caught:
            await client.call_tool("nope", {})
    assert caught.value.error.code == -32602
    assert caught.value.error.message == "Unknown tool: nope"


async def test_mcp_needs_the_apis_credentials(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        response = await http.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401
    assert "jsonrpc" not in response.text


async def test_raw_json_rpc_answers_as_langgraphs_server(url: str) -> None:
    """The wire shape LangGraph's server answers (checked against langgraph-api 0.16.7)."""
    headers = {**KEY, "accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        init: Any = (
            await http.post(
                "/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "raw", "version": "1"},
                    },
                },
            )
        ).json()
        assert init["result"]["protocolVersion"] == "2025-06-18"
        assert init["result"]["capabilities"]["tools"] == {"listChanged": False}
        called = (
            await http.post(
                "/mcp",
                json={
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"n": 2}},
                },
                headers={"mcp-protocol-version": "2025-06-18"},
            )
        ).json()
        # Stateless: no server-to-client stream to open, no session to end (as LangGraph answers).
        assert (await http.get("/mcp")).status_code == 405
        assert (await http.delete("/mcp")).status_code == 404
    assert called["id"] == 2
    assert called["result"]["content"] == [{"type": "text", "text": repr({"messages": [], "n": 2})}]


def test_a_server_loads_the_mcp_sdk_with_its_first_mcp_request() -> None:
    """About 30 MB and 0.4 s of start-up that a server nobody reaches over MCP does without."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import httpx
        from langgraph.checkpoint.memory import InMemorySaver
        from runplane.api import ApiSettings, create_app
        from runplane.demo.graphs import echo
        from runplane.runtime.graphs import LangGraphRuntime
        from runplane.testing import memory_manager

        def loaded() -> bool:
            return any(name == "mcp" or name.startswith("mcp.") for name in sys.modules)

        async def main() -> None:
            runtime = LangGraphRuntime({"echo": echo}, InMemorySaver())
            app = create_app(memory_manager(), runtime, ApiSettings())
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/ok")).status_code == 200
                print(loaded())
                message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                headers = {"Accept": "application/json, text/event-stream"}
                await client.post("/mcp", json=message, headers=headers)
                print(loaded())

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
