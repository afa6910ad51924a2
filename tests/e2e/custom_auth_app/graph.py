"""A one-node chat graph: replies with who asked, from the run's config (nothing user-specific here)."""

from __future__ import annotations

import operator
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]


async def reply(state: State) -> State:
    last = (state.get("messages") or ["?"])[-1]
    return {"messages": [f"echo: {last}"]}


builder = StateGraph(State)
builder.add_node("reply", reply)
builder.add_edge(START, "reply")
builder.add_edge("reply", END)
graph = builder.compile()
