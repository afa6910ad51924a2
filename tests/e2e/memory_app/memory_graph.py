"""A graph with long-term memory: facts kept per user in LangGraph's store, across threads."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    user: str
    fact: str
    known: list[str]


async def remember(state: State, *, store: BaseStore) -> State:
    namespace = ("facts", state["user"])
    if state.get("fact"):
        await store.aput(namespace, state["fact"], {"fact": state["fact"]})
    return {"known": sorted(item.value["fact"] for item in await store.asearch(namespace))}


builder = StateGraph(State)
builder.add_node("remember", remember)
builder.add_edge(START, "remember")
builder.add_edge("remember", END)
graph = builder.compile()
