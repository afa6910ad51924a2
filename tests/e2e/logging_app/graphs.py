"""A graph that logs from inside its node, as application code does (for the JSON log test)."""

from __future__ import annotations

import logging

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

logger = logging.getLogger("talker.app")


class State(TypedDict, total=False):
    said: str


async def speak(state: State) -> State:
    logger.warning("node says %s", state.get("said", "nothing"))
    return {"said": "done"}


_graph = StateGraph(State)
_graph.add_node("speak", speak)
_graph.add_edge(START, "speak")
_graph.add_edge("speak", END)
talker = _graph.compile(name="talker")
