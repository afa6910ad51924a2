"""The agent protocols LangGraph's server speaks besides its runs API (MCP, A2A, thread streaming),
as adapters over the same `RunManager`."""

from __future__ import annotations

from runplane.api.protocols import a2a, mcp, thread_stream
from runplane.api.protocols.thread_stream import websocket_routes

ENDPOINTS = (*thread_stream.ENDPOINTS, *mcp.ENDPOINTS, *a2a.ENDPOINTS)

__all__ = ["ENDPOINTS", "websocket_routes"]
