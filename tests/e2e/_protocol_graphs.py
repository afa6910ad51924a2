"""Graphs for the thread-streaming tests: a tool-calling agent on LangChain's fake chat model, and a
parent graph running the demo chat graph as a subgraph."""

from __future__ import annotations

from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from typing_extensions import TypedDict

from runplane.demo.graphs import chat


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class AgentState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]


async def agent_node(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
    answered = any(getattr(m, "type", "") == "tool" for m in state.get("messages", []))
    reply = (
        AIMessage(content="The sum is 3.")
        if answered
        else AIMessage(content="", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "call-add-1"}])
    )
    # Not streamed: the tool call comes whole, as from a provider without tool-call deltas.
    model = FakeMessagesListChatModel(responses=[reply])
    return {"messages": [await model.ainvoke(state.get("messages", []), config)]}


def _route(state: AgentState) -> str:
    last = state["messages"][-1]
    return "tools" if getattr(last, "tool_calls", None) else END


_agent = StateGraph(AgentState)
_agent.add_node("agent", agent_node)
_agent.add_node("tools", ToolNode([add]))
_agent.add_edge(START, "agent")
_agent.add_conditional_edges("agent", _route, ["tools", END])
_agent.add_edge("tools", "agent")
tool_agent = _agent.compile(name="tool_agent")

_parent = StateGraph(AgentState)
_parent.add_node("inner", chat)
_parent.add_edge(START, "inner")
_parent.add_edge("inner", END)
nested = _parent.compile(name="nested")
