"""Demo graphs for LangGraph 1.x's configuration: run context and server-built graphs.

- `greeter`: a graph with a dataclass `context_schema`. Its node reads `runtime.context`: a run
  without context gets the defaults; keys the schema does not declare are dropped by the server.
- `profile`: a graph factory taking `(config, runtime: ServerRuntime)`, called for every use of the
  graph. It builds a graph that reports who runs it (`runtime.user`), why the graph was built
  (`runtime.access_context`), and the run's context; it counts each user's runs in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph_sdk.runtime import ServerRuntime
from typing_extensions import TypedDict


@dataclass
class GreeterContext:
    """What a run of `greeter` may be configured with (`context={...}`)."""

    greeting: str = "Hello"
    name: str = "world"
    shout: bool = False


class GreeterState(TypedDict, total=False):
    reply: str


async def greet(state: GreeterState, runtime: Runtime[GreeterContext]) -> GreeterState:
    context = runtime.context
    reply = f"{context.greeting}, {context.name}!"
    return {"reply": reply.upper() if context.shout else reply}


_greeter = StateGraph(GreeterState, context_schema=GreeterContext)
_greeter.add_node("greet", greet)
_greeter.add_edge(START, "greet")
_greeter.add_edge("greet", END)
greeter = _greeter.compile(name="greeter")


@dataclass
class ProfileContext:
    """`profile`'s context: how the factory labels the graph it builds for a run."""

    label: str = "default"


class ProfileState(TypedDict, total=False):
    user: str | None
    access_context: str
    label: str
    runs: int
    thread_id: str


def make_profile(
    config: RunnableConfig, runtime: ServerRuntime[dict[str, Any]]
) -> CompiledStateGraph[ProfileState, ProfileContext, ProfileState, ProfileState]:
    """Build `profile` for one use; `runtime` is LangGraph's `ServerRuntime` (its execution variant,
    with the run's context as given, when the graph is built to run)."""
    user = runtime.user.identity if runtime.user is not None else None
    execution = runtime.execution_runtime
    label = execution.context.get("label") if execution is not None and execution.context else None
    store = runtime.store

    async def report(state: ProfileState) -> ProfileState:
        namespace = ("profile_runs", user or "anonymous")
        item = await store.aget(namespace, "count")
        runs = (item.value["n"] if item else 0) + 1
        await store.aput(namespace, "count", {"n": runs})
        return {
            "user": user,
            "access_context": runtime.access_context,
            "label": label or "default",
            "runs": runs,
            "thread_id": str(config["configurable"].get("thread_id")),
        }

    builder = StateGraph(ProfileState, context_schema=ProfileContext)
    builder.add_node("report", report)
    builder.add_edge(START, "report")
    builder.add_edge("report", END)
    return builder.compile(name="profile")
