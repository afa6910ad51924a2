"""Notes kept per user in LangGraph's store: `put` one (then list them), or `search` them
(semantically, with a `query`, when the langgraph.json gives the store an index)."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.store.base import BaseStore
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    op: str
    user: str
    key: str
    text: str
    query: str
    found: list[dict[str, Any]]


async def notes(state: State, *, store: BaseStore) -> State:
    namespace = ("notes", state["user"])
    if state["op"] == "put":
        await store.aput(namespace, state["key"], {"text": state["text"]})
    items = await store.asearch(namespace, query=state.get("query"), limit=10)
    return {"found": [{"text": item.value["text"], "score": item.score} for item in items]}


builder = StateGraph(State)
builder.add_node("notes", notes)
builder.add_edge(START, "notes")
builder.add_edge("notes", END)
graph = builder.compile()
