"""`whoami`: a graph that reports the request headers its run was given (`http.configurable_headers`
in `langgraph_http.json` passes `x-user-*` headers into `config["configurable"]`)."""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    #: The run's configurable keys that came from request headers (`x-...`).
    headers: dict[str, Any]


def report(state: State, config: RunnableConfig) -> State:
    configurable = config.get("configurable") or {}
    return {"headers": {k: v for k, v in configurable.items() if k.startswith("x-")}}


_builder = StateGraph(State)
_builder.add_node("report", report)
_builder.add_edge(START, "report")
_builder.add_edge("report", END)
whoami = _builder.compile()
