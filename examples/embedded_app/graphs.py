"""The example application's agent: a LangGraph graph like any other, defined in the application.

It answers the last message. A message may name a `gate` file: the agent then waits for that file
to exist before answering, standing in for a slow model call (the tests open the gate when they
want the run to finish, and leave it shut to cancel a run or kill the process mid-run).
"""

from __future__ import annotations

import asyncio
import operator
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    gate: str


async def think(state: State) -> State:
    gate = state.get("gate")
    # The gate is opened by another process (a test): there is nothing to await but the file.
    while gate and not await asyncio.to_thread(Path(gate).exists):  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # the "model" is thinking; a cancel interrupts this sleep
    return {}


async def answer(state: State) -> State:
    return {"messages": [f"echo: {state['messages'][-1]}"]}


builder = StateGraph(State)
builder.add_node("think", think)
builder.add_node("answer", answer)
builder.add_edge(START, "think")
builder.add_edge("think", "answer")
builder.add_edge("answer", END)
agent = builder.compile()
