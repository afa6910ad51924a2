"""The agent protocols LangGraph's server speaks besides its runs API (MCP, A2A, thread streaming),
as adapters over the same `RunManager`."""

from __future__ import annotations

from runplane.api.protocols import a2a, mcp

ENDPOINTS = (*mcp.ENDPOINTS, *a2a.ENDPOINTS)
