"""MCP at `/mcp` (streamable HTTP), with each assistant as a tool, built on the official `mcp` SDK
(`_mcp_server.py`, loaded by the first MCP request).

As on LangGraph's server: `tools/list` names each assistant's tool after the assistant (sanitized
to MCP's tool-name alphabet), its input schema is the graph's input schema (LangChain message
lists simplified to a string), and `tools/call` runs the assistant as a stateless run and answers
its final values. The transport is stateless (no `Mcp-Session-Id`): every POST carries one
JSON-RPC message and gets its answer as JSON, so any API process can answer any request.

Authentication is the API's (the route sits behind it); with custom auth, listing is authorized
as an assistants search and each call as the stateless run it creates (`POST /runs/wait`).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.errors import error_response
from runplane.api.routing import Call, Endpoint, Reply

TAG = "MCP"

# -- tool names and schemas (as LangGraph's server derives them) ------------------------------------

_TOOL_NAME_MAX_LENGTH = 128
_INVALID_TOOL_CHARS = re.compile(r"[^a-zA-Z0-9_\-.]")
_MESSAGE_TYPES = frozenset(
    f"{kind}{suffix}"
    for kind in ("AI", "Human", "Chat", "System", "Function", "Tool")
    for suffix in ("Message", "MessageChunk")
)
_MESSAGE_SUPPORT_TYPES = frozenset(
    {
        "ToolCall",
        "ToolCallChunk",
        "InvalidToolCall",
        "UsageMetadata",
        "InputTokenDetails",
        "OutputTokenDetails",
    }
)
_REF_PREFIX = "#/$defs/"


def tool_name(assistant_name: str) -> str:
    """An assistant's name in MCP's tool-name alphabet (`^[a-zA-Z0-9_\\-.]{1,128}$`)."""
    name = re.sub(r"\s+", "_", assistant_name.strip())
    return _INVALID_TOOL_CHARS.sub("", name)[:_TOOL_NAME_MAX_LENGTH]


def _is_message_list(prop: Any) -> bool:
    if not isinstance(prop, dict) or prop.get("type") != "array":
        return False
    items = prop.get("items") or {}
    for candidate in items.get("oneOf") or items.get("anyOf") or []:
        ref = str(candidate.get("$ref", ""))
        if ref.startswith(_REF_PREFIX) and ref[len(_REF_PREFIX) :] in _MESSAGE_TYPES:
            return True
    return False


def tool_input_schema(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """The graph's input schema for an LLM: LangChain message lists become a plain user message."""
    schema = dict(input_schema or {})
    defs = schema.get("$defs")
    if isinstance(defs, dict) and set(defs) & _MESSAGE_TYPES:
        defs = {k: v for k, v in defs.items() if k not in _MESSAGE_TYPES | _MESSAGE_SUPPORT_TYPES}
        if defs:
            schema["$defs"] = defs
        else:
            del schema["$defs"]
        schema["properties"] = {
            key: (
                {
                    "type": "string",
                    "title": prop.get("title", key),
                    "description": "The user message to send to the agent.",
                }
                if _is_message_list(prop)
                else prop
            )
            for key, prop in (schema.get("properties") or {}).items()
        }
    schema.setdefault("type", "object")  # MCP requires an object schema
    return schema


async def mcp_post(call: Call) -> Response:
    # The SDK is imported by the first MCP request, not by every server: it is about 30 MB of
    # memory and 0.4 s of start-up that a server nobody reaches over MCP does without.
    from runplane.api.protocols._mcp_server import McpExchange

    return McpExchange(call)


async def mcp_get(call: Call) -> Response:
    # The stateless transport has no server-to-client stream to open (a GET would wait forever).
    return error_response(405, "MCP server-to-client streams are not supported", headers={"Allow": "POST"})


async def mcp_delete(call: Call) -> Response:
    # No sessions: there is none to end (LangGraph's server answers 404 too).
    return error_response(404, "Session not found")


# The replies LangGraph's server documents for each method of `/mcp`.
_POST_REPLIES = {
    200: Reply("A JSON-RPC response.", {"type": "object"}),
    202: Reply("A notification or response was accepted."),
    400: Reply("Not a JSON-RPC message.", s.ErrorOut),
}
_GET_REPLIES = {405: Reply("No server-to-client stream.", s.ErrorOut)}
_DELETE_REPLIES = {404: Reply("No session to end.", s.ErrorOut)}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/mcp", mcp_post, "MCP: send a JSON-RPC message", TAG, replies=_POST_REPLIES),
    Endpoint("GET", "/mcp", mcp_get, "MCP: server-to-client stream (unsupported)", TAG, replies=_GET_REPLIES),
    Endpoint("DELETE", "/mcp", mcp_delete, "MCP: end a session (none to end)", TAG, replies=_DELETE_REPLIES),
)
