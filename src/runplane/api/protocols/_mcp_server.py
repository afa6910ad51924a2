"""The MCP SDK's side of `/mcp` (see `mcp.py`): the tool handlers and the transport a request is
handed to. Imported by the first MCP request only."""

from __future__ import annotations

import contextvars
import logging
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runplane.api import schemas as s
from runplane.api.authz import filter_matches
from runplane.api.protocols._runs import run_to_output, status_and_detail
from runplane.api.protocols.mcp import tool_input_schema, tool_name
from runplane.api.routing import Call
from runplane.core.graphs import Assistant
from runplane.core.manager import MAX_LIMIT
from runplane.core.models import AssistantFilter

logger = logging.getLogger(__name__)

#: Tools per `tools/list` page (the cursor is the offset of the next page), as LangGraph's server.
PAGE_SIZE = 100
_INVALID_PARAMS = -32602
_INTERNAL_ERROR = -32603

#: The request being served: the MCP handlers run in tasks the SDK starts, which inherit it.
_CALL: contextvars.ContextVar[Call] = contextvars.ContextVar("runplane_mcp_call")


# -- handlers ------------------------------------------------------------------------------------------


async def _visible_assistants(call: Call) -> list[Assistant]:
    """The caller's assistants and the graphs' system ones, as `/assistants/search` shows them."""
    await call.manager.register_graphs(call.runtime.assistants())
    found = await call.manager.search_assistants(call.owner, AssistantFilter(limit=MAX_LIMIT))
    found = sorted(found, key=lambda a: (a.graph_id, a.assistant_id))
    return [a for a in found if filter_matches(a.metadata, call.filters)]


async def _tool(call: Call, assistant: Assistant, name: str) -> types.Tool | None:
    try:
        schemas = await call.runtime.graph_schemas(assistant.graph_id)
    except Exception:  # a graph whose schema cannot be built is left out, as on LangGraph's server
        logger.warning(
            "no input schema for assistant %s: left out of the MCP tools",
            assistant.assistant_id,
            extra={"action": "mcp"},
        )
        return None
    return types.Tool(
        name=name,
        title=assistant.name,
        description=assistant.description or f"Tool based on the {assistant.name} assistant",
        input_schema=tool_input_schema(schemas.get("input_schema")),
        annotations=types.ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )


def _by_tool_name(assistants: list[Assistant]) -> dict[str, Assistant]:
    """Assistants by tool name; the first of several with one name wins (LangGraph's rule)."""
    named: dict[str, Assistant] = {}
    for assistant in assistants:
        name = tool_name(assistant.name)
        if name and name not in named:
            named[name] = assistant
    return named


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    call = _CALL.get()
    cursor = params.cursor if params is not None else None
    try:
        offset = max(int(cursor or 0), 0)
    except ValueError:
        offset = 0
    page = (await _visible_assistants(call))[offset : offset + PAGE_SIZE]
    tools = [
        tool
        for name, assistant in _by_tool_name(page).items()
        if (tool := await _tool(call, assistant, name)) is not None
    ]
    next_cursor = str(offset + PAGE_SIZE) if len(page) == PAGE_SIZE else None
    return types.ListToolsResult(tools=tools, next_cursor=next_cursor)


async def call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    call = _CALL.get()
    matching = [a for a in await _visible_assistants(call) if tool_name(a.name) == params.name]
    if not matching:
        raise MCPError(_INVALID_PARAMS, f"Unknown tool: {params.name}")
    body = s.RunCreateStateless.model_validate(
        {"assistant_id": matching[0].assistant_id, "input": params.arguments or {}}
    )
    try:
        outcome = await run_to_output(call, body)
    except Exception as exc:
        status, detail = status_and_detail(exc)
        raise MCPError(_INVALID_PARAMS if status < 500 else _INTERNAL_ERROR, detail) from None
    if outcome.error is not None:
        # The reference answers only the error's type; its message is what a model can act on.
        error, message = outcome.error.get("error", "Error"), outcome.error.get("message", "")
        text = f"{error}: {message}" if message else str(error)
        return types.CallToolResult(is_error=True, content=[types.TextContent(type="text", text=text)])
    # `repr` of the output, as LangGraph's server answers.
    return types.CallToolResult(content=[types.TextContent(type="text", text=repr(outcome.values))])


def _server(version: str) -> Server[Any]:
    return Server("LangGraph", version=version, on_list_tools=list_tools, on_call_tool=call_tool)


class McpExchange(Response):
    """Hands the request to the MCP SDK's streamable HTTP transport.

    Stateless mode keeps nothing between requests, so each request gets its own session manager
    (the SDK's managers serve one `run()` each); the request's `Call` reaches the tool handlers
    through `_CALL`.
    """

    def __init__(self, call: Call) -> None:
        super().__init__()
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        manager = StreamableHTTPSessionManager(
            _server(self.call.settings.version),
            json_response=True,
            stateless=True,
            max_request_body_size=self.call.settings.max_body_bytes,
        )
        token = _CALL.set(self.call)
        try:
            async with manager.run():
                await manager.handle_request(scope, receive, send)
        finally:
            _CALL.reset(token)
