"""LangGraph 1.x projects as users write them, through the real `langgraph-sdk` over HTTP: run
context (defaults, unknown keys, never in checkpoint metadata), `ServerRuntime` graph factories,
and a project with one graph that fails to load."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings
from runplane.runtime.graphs import LangGraphRuntime, load_runtime
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api._support import serve

CONTEXT_GRAPHS = """
from __future__ import annotations

from dataclasses import dataclass

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel
from typing_extensions import TypedDict


@dataclass
class Settings:
    model: str = "small"
    temperature: float = 0.5


class Prefs(BaseModel):
    language: str = "en"


class State(TypedDict, total=False):
    seen: dict


async def read_dataclass(state: State, runtime: Runtime[Settings]) -> State:
    return {"seen": {"model": runtime.context.model, "temperature": runtime.context.temperature}}


async def read_pydantic(state: State, runtime: Runtime[Prefs]) -> State:
    return {"seen": {"language": runtime.context.language}}


def build(node, schema):
    builder = StateGraph(State, context_schema=schema)
    builder.add_node("read", node)
    builder.add_edge(START, "read")
    builder.add_edge("read", END)
    return builder.compile()


with_dataclass = build(read_dataclass, Settings)
with_pydantic = build(read_pydantic, Prefs)
"""

FACTORIES = """
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

if TYPE_CHECKING:  # as LangGraph's docs write it: the server resolves the name
    from langchain_core.runnables import RunnableConfig
    from langgraph_sdk.runtime import ServerRuntime


class State(TypedDict, total=False):
    report: dict


def _graph(report):
    async def node(state: State) -> State:
        return {"report": report}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder.compile()


def _describe(runtime, config=None):
    execution = runtime.execution_runtime
    return {
        "access_context": runtime.access_context,
        "user": runtime.user.identity if runtime.user is not None else None,
        "has_store": runtime.store is not None,
        "context": execution.context if execution is not None else None,
        "thread_id": config["configurable"].get("thread_id") if config is not None else None,
    }


def runtime_then_config(runtime: ServerRuntime, config: RunnableConfig):
    return _graph(_describe(runtime, config))


async def config_then_runtime(config: RunnableConfig, runtime: ServerRuntime):
    return _graph(_describe(runtime, config))


def runtime_only(runtime: ServerRuntime):
    return _graph(_describe(runtime))


#: What `with_resource` did, in order (read by the test through the `events` graph).
EVENTS = []


@contextlib.asynccontextmanager
async def with_resource(runtime: ServerRuntime):
    # The shape LangGraph's docs give: connect only to execute, hold it for the whole run.
    if runtime.execution_runtime is None:
        yield _graph({"connected": False})
        return
    EVENTS.append("open")

    async def node(state: State) -> State:
        EVENTS.append("node")
        return {"report": {"connected": EVENTS[-2:] == ["open", "node"]}}

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    try:
        yield builder.compile()
    finally:
        EVENTS.append("close")


async def resource_log(state: State) -> State:
    return {"report": {"events": list(EVENTS)}}


_log = StateGraph(State)
_log.add_node("log", resource_log)
_log.add_edge(START, "log")
_log.add_edge("log", END)
events = _log.compile()
"""

SIMPLE = """
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    n: int


def bump(state: State) -> State:
    return {"n": state.get("n", 0) + 1}


builder = StateGraph(State)
builder.add_node("bump", bump)
builder.add_edge(START, "bump")
builder.add_edge("bump", END)
graph = builder.compile()
"""


#: The graphs of each test project (all files are written to each).
PROJECTS = {
    "context": {
        "dataclass_ctx": "./context_graphs.py:with_dataclass",
        "pydantic_ctx": "./context_graphs.py:with_pydantic",
    },
    "factories": {
        "rt_cfg": "./factories.py:runtime_then_config",
        "cfg_rt": "./factories.py:config_then_runtime",
        "rt_only": "./factories.py:runtime_only",
        "with_resource": "./factories.py:with_resource",
        "events": "./factories.py:events",
    },
    "with_broken": {"simple": "./simple.py:graph", "broken": "./broken.py:graph"},
}


def _load(tmp_path: Path, project: str) -> LangGraphRuntime:
    files = {
        "context_graphs.py": CONTEXT_GRAPHS,
        "factories.py": FACTORIES,
        "simple.py": SIMPLE,
        "broken.py": "import no_such_package_for_runplane_tests\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    (tmp_path / "langgraph.json").write_text(json.dumps({"graphs": PROJECTS[project]}))
    return load_runtime(str(tmp_path / "langgraph.json"), InMemorySaver(), store=InMemoryStore())


async def _client(
    runtime: LangGraphRuntime, api_keys: dict[str, str] | None
) -> AsyncIterator[LangGraphClient]:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.5))
    worker = Worker(manager, runtime, concurrency=2, shutdown_grace=0.5, poll_interval=0.05)
    await worker.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.2, api_keys=api_keys))
    try:
        async with serve(app) as url:
            client = get_client(url=url, api_key="key-alice" if api_keys else None)
            try:
                yield client
            finally:
                await client.aclose()
    finally:
        await worker.stop()


@pytest.fixture
async def sdk(tmp_path: Path) -> AsyncIterator[LangGraphClient]:
    async for client in _client(_load(tmp_path, "context"), None):
        yield client


@pytest.fixture
async def factories(tmp_path: Path) -> AsyncIterator[LangGraphClient]:
    async for client in _client(_load(tmp_path, "factories"), None):
        yield client


@pytest.fixture
async def alice(tmp_path: Path) -> AsyncIterator[LangGraphClient]:
    async for client in _client(_load(tmp_path, "factories"), {"key-alice": "alice"}):
        yield client


@pytest.fixture
async def with_broken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[LangGraphClient]:
    with caplog.at_level(logging.ERROR, logger="runplane.runtime.graphs"):
        loaded = _load(tmp_path, "with_broken")
    # Loud about the graph that failed, and only about it.
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and "'broken'" in failures[0].getMessage()
    assert "no_such_package_for_runplane_tests" in failures[0].getMessage()
    async for client in _client(loaded, None):
        yield client


async def _wait(sdk: LangGraphClient, graph: str, **kwargs: Any) -> tuple[str, Any]:
    thread = await sdk.threads.create()
    values = await sdk.runs.wait(thread["thread_id"], graph, **kwargs)
    return thread["thread_id"], values


# -- context ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph", "defaults"),
    [("dataclass_ctx", {"model": "small", "temperature": 0.5}), ("pydantic_ctx", {"language": "en"})],
)
async def test_a_run_without_context_gets_the_schema_defaults(
    sdk: LangGraphClient, graph: str, defaults: dict[str, Any]
) -> None:
    _, values = await _wait(sdk, graph, input={})
    assert values == {"seen": defaults}


async def test_context_keys_outside_the_schema_are_dropped_and_never_reach_checkpoint_metadata(
    sdk: LangGraphClient,
) -> None:
    thread_id, values = await _wait(
        sdk,
        "dataclass_ctx",
        input={},
        context={"model": "large", "secret": "s3cr3t-token"},
        metadata={"origin": "test"},
    )
    assert values == {"seen": {"model": "large", "temperature": 0.5}}
    history = await sdk.threads.get_history(thread_id)
    assert history
    for state in history:
        metadata = state["metadata"]
        assert metadata is not None
        assert "secret" not in metadata and "model" not in metadata
        assert "s3cr3t-token" not in json.dumps(metadata)
        # What LangGraph's server writes there, context aside.
        assert metadata["graph_id"] == "dataclass_ctx" and metadata["user_id"] == ""
        assert metadata["origin"] == "test" and metadata["created_by"] == "system"
        assert metadata["langgraph_auth_user_id"] == "" and "langgraph_version" in metadata


async def test_the_configurable_stands_in_for_a_missing_context(sdk: LangGraphClient) -> None:
    """As LangGraph's server does: `config.configurable` is the context when none is given."""
    _, values = await _wait(sdk, "dataclass_ctx", input={}, config={"configurable": {"model": "medium"}})
    assert values == {"seen": {"model": "medium", "temperature": 0.5}}


# -- ServerRuntime factories ------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", ["rt_cfg", "cfg_rt"])
async def test_factories_taking_config_and_server_runtime_are_called_per_run(
    factories: LangGraphClient, graph: str
) -> None:
    sdk = factories
    thread_id, values = await _wait(sdk, graph, input={}, context={"tenant": "acme"})
    assert values["report"] == {
        "access_context": "threads.create_run",
        "user": None,  # single-user mode: no authenticated user, as without custom auth
        "has_store": True,
        "context": {"tenant": "acme"},
        "thread_id": thread_id,
    }
    # Reading the graph's structure builds it again, for that purpose.
    schemas = await sdk.assistants.get_schemas(graph)
    assert schemas["input_schema"] is not None and "properties" in schemas["input_schema"]


async def test_a_server_runtime_factory_sees_the_authenticated_user(alice: LangGraphClient) -> None:
    _, values = await _wait(alice, "rt_only", input={})
    assert values["report"]["user"] == "alice"
    assert values["report"]["access_context"] == "threads.create_run"


async def test_a_context_manager_factory_holds_its_resource_for_the_whole_run(
    factories: LangGraphClient,
) -> None:
    _, values = await _wait(factories, "with_resource", input={})
    assert values["report"] == {"connected": True}
    _, log = await _wait(factories, "events", input={})
    assert log["report"]["events"] == ["open", "node", "close"]
    # A structural read builds the graph without connecting.
    input_schema = (await factories.assistants.get_schemas("with_resource"))["input_schema"]
    assert input_schema is not None and "properties" in input_schema
    _, log = await _wait(factories, "events", input={})
    assert log["report"]["events"] == ["open", "node", "close"]


# -- a graph that fails to load -----------------------------------------------------------------------------


async def test_a_graph_that_failed_to_load_is_refused_with_its_reason_and_the_others_run(
    with_broken: LangGraphClient,
) -> None:
    sdk = with_broken
    _, values = await _wait(sdk, "simple", input={"n": 1})
    assert values == {"n": 2}
    assert "broken" in {a["graph_id"] for a in await sdk.assistants.search(limit=100)}
    thread = await sdk.threads.create()
    for attempt in (
        sdk.runs.create(thread["thread_id"], "broken", input={}),
        sdk.runs.wait(None, "broken", input={}),
        sdk.assistants.get_schemas("broken"),
    ):
        with pytest.raises(httpx.HTTPStatusError) as raised:
            await attempt
        assert raised.value.response.status_code == 424
        detail = raised.value.response.json()["detail"]
        assert detail.startswith("Graph 'broken' failed to load: ")
        assert "no_such_package_for_runplane_tests" in detail
    assert await sdk.runs.list(thread["thread_id"]) == []  # refused: nothing was created


# -- the demo graphs ---------------------------------------------------------------------------------------


@pytest.fixture
async def demo() -> AsyncIterator[LangGraphClient]:
    async for client in _client(load_runtime(None, InMemorySaver(), store=InMemoryStore()), None):
        yield client


async def test_demo_greeter_reads_its_context_schema(demo: LangGraphClient) -> None:
    assert (await _wait(demo, "greeter", input={}))[1] == {"reply": "Hello, world!"}
    _, values = await _wait(demo, "greeter", input={}, context={"name": "Ada", "shout": True, "token": "x"})
    assert values == {"reply": "HELLO, ADA!"}
    schemas = await demo.assistants.get_schemas("greeter")
    assert schemas["context_schema"] is not None
    assert set(schemas["context_schema"]["properties"]) == {"greeting", "name", "shout"}


async def test_demo_profile_is_built_per_run_by_its_server_runtime_factory(demo: LangGraphClient) -> None:
    first_thread, first = await _wait(demo, "profile", input={}, context={"label": "beta"})
    assert first == {
        "user": None,
        "access_context": "threads.create_run",
        "label": "beta",
        "runs": 1,
        "thread_id": first_thread,
    }
    _, second = await _wait(demo, "profile", input={})
    assert second["runs"] == 2 and second["label"] == "default"  # the store is shared across threads
