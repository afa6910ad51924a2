"""Loading a langgraph.json as LangGraph's dev server does: paths, modules, factories, env, deps."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph_sdk.runtime import ServerRuntime, _ExecutionRuntime, _ReadRuntime

from runplane.core.errors import GraphUnavailable, InvalidInput, NotFound
from runplane.core.graphs import default_assistant_id
from runplane.runtime.graphs import LangGraphRuntime, load_module_file, load_runtime
from runplane.runtime.langgraph_store import store_settings
from runplane.runtime.project import read_project

SIMPLE_GRAPH = """
from typing_extensions import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    n: int
    seen: str


def bump(state: State) -> State:
    return {"n": state.get("n", 0) + 1}


builder = StateGraph(State)
builder.add_node("bump", bump)
builder.add_edge(START, "bump")
builder.add_edge("bump", END)
graph = builder.compile()
"""

FUTURE_GRAPH = """
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import BaseModel
from langgraph.graph import END, START, StateGraph


@dataclass
class Note:
    text: str
    tags: list[str] = field(default_factory=list)


class Item(BaseModel):
    name: str
    note: Note | None = None


@dataclass
class State:
    notes: Annotated[list[Note], operator.add] = field(default_factory=list)
    item: Item | None = None
    count: int = 0


def step(state: State) -> dict:
    return {"notes": [Note("hi", ["a"])], "item": Item(name="x", note=Note("n")), "count": state.count + 1}


builder = StateGraph(State)
builder.add_node("step", step)
builder.add_edge(START, "step")
builder.add_edge("step", END)
graph = builder.compile()
"""


@pytest.fixture(autouse=True)
def _isolated_interpreter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Loading mutates sys.path, sys.modules and os.environ: undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    environ = dict(os.environ)
    modules = set(sys.modules)
    yield
    os.environ.clear()
    os.environ.update(environ)
    for name in set(sys.modules) - modules:
        if name.startswith(("runplane_graph_", "agentpkg_")):  # only what the tests loaded
            del sys.modules[name]


def project(tmp_path: Path, config: dict[str, Any], files: dict[str, str]) -> str:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "langgraph.json").write_text(json.dumps(config))
    return str(tmp_path / "langgraph.json")


async def invoke(runtime: LangGraphRuntime, graph_id: str, value: Any, thread_id: str = "t") -> Any:
    graph = await runtime.get_graph(graph_id, {"configurable": {"thread_id": thread_id}})
    return await graph.ainvoke(value, {"configurable": {"thread_id": thread_id}})


def test_demo_graphs_have_one_system_assistant_each() -> None:
    runtime = load_runtime(None, InMemorySaver())
    assistants = {a.graph_id: a for a in runtime.assistants()}
    assert set(assistants) == {"echo", "chat", "slow", "hitl", "greeter", "profile"}
    for graph_id, assistant in assistants.items():
        assert assistant.assistant_id == default_assistant_id(graph_id)
        assert assistant.name == graph_id and assistant.metadata == {"created_by": "system"}
    assert runtime.resolve("chat") == assistants["chat"]
    assert runtime.resolve(default_assistant_id("chat")) == assistants["chat"]
    with pytest.raises(NotFound):
        runtime.resolve("nope")
    with pytest.raises(NotFound):
        runtime.resolve(str(uuid.uuid4()))


async def test_file_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = project(
        tmp_path / "app", {"graphs": {"g": "./src/graph.py:graph"}}, {"src/graph.py": SIMPLE_GRAPH}
    )
    monkeypatch.chdir(tmp_path)  # not the config's directory
    runtime = load_runtime(config, InMemorySaver())
    assert await invoke(runtime, "g", {"n": 1}) == {"n": 2}
    graph = await runtime.get_graph("g")
    assert graph.checkpointer is runtime.checkpointer
    assert graph.name == "g"  # an unnamed graph is named after its id, as LangGraph's server does


async def test_a_file_used_by_several_graphs_is_loaded_once(tmp_path: Path) -> None:
    config = project(
        tmp_path, {"graphs": {"a": "./graph.py:graph", "b": "./graph.py:builder"}}, {"graph.py": SIMPLE_GRAPH}
    )
    runtime = load_runtime(config, InMemorySaver())
    assert await invoke(runtime, "a", {"n": 0}) == {"n": 1}
    assert await invoke(runtime, "b", {"n": 5}, "t2") == {"n": 6}  # a StateGraph, compiled on load
    graph_file = str((tmp_path / "graph.py").resolve())
    assert len([m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == graph_file]) == 1


async def test_module_attr_with_local_dependencies(tmp_path: Path) -> None:
    package = f"agentpkg_{uuid.uuid4().hex[:8]}"
    config = project(
        tmp_path,
        {"dependencies": ["."], "graphs": {"g": {"path": f"{package}.agent:graph", "description": "demo"}}},
        {
            f"{package}/__init__.py": "",
            f"{package}/helpers.py": "INCREMENT = 10\n",
            f"{package}/agent.py": SIMPLE_GRAPH.replace(
                '"n": state.get("n", 0) + 1', '"n": state.get("n", 0) + INCREMENT'
            ).replace(
                "from typing_extensions", f"from {package}.helpers import INCREMENT\nfrom typing_extensions"
            ),
        },
    )
    runtime = load_runtime(config, InMemorySaver())
    assert await invoke(runtime, "g", {"n": 1}) == {"n": 11}
    assert runtime.resolve("g").description == "demo"


async def test_graph_factories_are_called_per_run_with_the_config(tmp_path: Path) -> None:
    factories = SIMPLE_GRAPH + textwrap.dedent(
        """
        CALLS = []


        def with_config(config):
            CALLS.append(config["configurable"].get("thread_id"))
            return builder.compile()


        def no_args():
            return builder


        async def async_factory(config):
            return builder.compile()
        """
    )
    config = project(
        tmp_path,
        {
            "graphs": {
                "cfg": "./graph.py:with_config",
                "bare": "./graph.py:no_args",
                "async": "./graph.py:async_factory",
            }
        },
        {"graph.py": factories},
    )
    runtime = load_runtime(config, InMemorySaver())
    assert await invoke(runtime, "cfg", {"n": 1}, "thread-a") == {"n": 2}
    assert await invoke(runtime, "bare", {"n": 2}, "thread-b") == {"n": 3}
    assert await invoke(runtime, "async", {"n": 3}, "thread-c") == {"n": 4}
    module = load_module_file(tmp_path / "graph.py")  # cached: the module the runtime loaded
    assert module.CALLS == ["thread-a"]
    graph = await runtime.get_graph("async")
    assert graph.checkpointer is runtime.checkpointer


def test_env_mapping_is_applied(tmp_path: Path) -> None:
    config = project(
        tmp_path,
        {"graphs": {"g": "./graph.py:graph"}, "env": {"RP_TEST_MAPPING": "yes"}},
        {"graph.py": SIMPLE_GRAPH},
    )
    load_runtime(config, InMemorySaver())
    assert os.environ["RP_TEST_MAPPING"] == "yes"


def test_env_file_is_read_relative_to_the_config_and_visible_at_import(tmp_path: Path) -> None:
    graph = "import os\nSEEN_AT_IMPORT = os.environ.get('RP_TEST_FILE')\n" + SIMPLE_GRAPH
    config = project(
        tmp_path,
        {"graphs": {"g": "./graph.py:graph"}, "env": ".env"},
        {"graph.py": graph, ".env": "RP_TEST_FILE=from-file\n# comment\nRP_TEST_QUOTED='a b'\n"},
    )
    load_runtime(config, InMemorySaver())
    assert os.environ["RP_TEST_FILE"] == "from-file" and os.environ["RP_TEST_QUOTED"] == "a b"
    module = load_module_file(tmp_path / "graph.py")  # cached: the module the runtime loaded
    assert module.SEEN_AT_IMPORT == "from-file"


@pytest.mark.parametrize("saver_kind", ["memory", "sqlite"])
async def test_future_annotations_with_dataclass_and_pydantic_state(tmp_path: Path, saver_kind: str) -> None:
    """The graph module resolves its own string annotations through sys.modules while it loads,
    and the checkpointer can deserialize its dataclasses (by module name) afterwards."""
    config = project(tmp_path, {"graphs": {"g": "./graph.py:graph"}}, {"graph.py": FUTURE_GRAPH})
    if saver_kind == "memory":
        runtime = load_runtime(config, InMemorySaver())
        first, second = await invoke(runtime, "g", {"count": 1}), await invoke(runtime, "g", {"count": 5})
    else:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "cp.db")) as saver:
            runtime = load_runtime(config, saver)
            first, second = await invoke(runtime, "g", {"count": 1}), await invoke(runtime, "g", {"count": 5})
            state = await runtime.get_state("g", "t")
            assert state["values"]["item"] == {"name": "x", "note": {"text": "n", "tags": []}}
    assert first["count"] == 2 and second["count"] == 6
    assert [n.text for n in second["notes"]] == ["hi", "hi"]
    assert type(second["notes"][0]).__module__.startswith("runplane_graph_graph_")


@pytest.mark.parametrize(
    ("graphs", "files", "message"),
    [
        ({"g": "./missing.py:graph"}, {}, "does not exist"),
        ({"g": "./graph.py:nope"}, {"graph.py": SIMPLE_GRAPH}, "no attribute 'nope'"),
        ({"g": "./graph.py"}, {"graph.py": SIMPLE_GRAPH}, "expected"),
        ({"g": "./graph.py:NUMBER"}, {"graph.py": "NUMBER = 3\n"}, "not a graph"),
        ({"g": "./graph.py:graph"}, {"graph.py": "import no_such_package_xyz\n"}, "ModuleNotFoundError"),
        ({"g": "no_such_package_xyz.agent:graph"}, {}, "importing no_such_package_xyz.agent failed"),
        ({}, {}, "no graphs"),
    ],
)
def test_invalid_configs_are_refused(
    tmp_path: Path, graphs: dict[str, Any], files: dict[str, str], message: str
) -> None:
    config = project(tmp_path, {"graphs": graphs}, files)
    with pytest.raises(InvalidInput, match=message):
        load_runtime(config, InMemorySaver())


def test_unreadable_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "langgraph.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_runtime(str(tmp_path / "langgraph.json"), InMemorySaver())
    with pytest.raises(InvalidInput, match="cannot read"):
        load_runtime(str(tmp_path / "missing.json"), InMemorySaver())


async def test_schemas_and_drawable_graph() -> None:
    runtime = load_runtime(None, InMemorySaver())
    schemas = await runtime.graph_schemas("chat")
    assert set(schemas) == {
        "input_schema",
        "output_schema",
        "state_schema",
        "config_schema",
        "context_schema",
    }
    assert "messages" in schemas["state_schema"]["properties"]
    assert "messages" in schemas["input_schema"]["properties"]
    drawn = await runtime.graph_drawable("hitl")
    assert [n["id"] for n in drawn["nodes"]] == ["__start__", "ask", "confirm", "__end__"]
    assert {"source": "ask", "target": "confirm"} in drawn["edges"]
    with pytest.raises(NotFound):
        await runtime.get_graph("nope")


# -- graph factories and ServerRuntime ------------------------------------------------------------------

RUNTIME_FACTORIES = (
    "from __future__ import annotations\n"
    + SIMPLE_GRAPH
    + textwrap.dedent(
        """
    from dataclasses import dataclass
    from typing import TYPE_CHECKING, Annotated

    from langgraph_sdk.runtime import ServerRuntime

    if TYPE_CHECKING:
        from langchain_core.runnables import RunnableConfig

    SEEN = []


    @dataclass
    class Ctx:
        tenant: str = "none"


    def typed_runtime(rt: ServerRuntime[Ctx]):
        SEEN.append(("typed", rt.access_context, rt.execution_runtime is not None))
        return builder


    def annotated(cfg: RunnableConfig, rt: Annotated[ServerRuntime, "doc"]):
        SEEN.append(("annotated", rt.access_context, cfg["configurable"].get("thread_id")))
        return builder


    def untyped_one(anything):
        SEEN.append(("config", sorted(anything)))
        return builder


    def two_configs(a, b):
        return builder


    def three(a, b, rt: ServerRuntime):
        return builder
    """
    )
)


async def test_factories_are_classified_by_their_parameters_as_langgraph_does(tmp_path: Path) -> None:
    config = project(
        tmp_path,
        {
            "graphs": {
                "typed": "./graph.py:typed_runtime",
                "annotated": "./graph.py:annotated",
                "untyped": "./graph.py:untyped_one",
                "two_configs": "./graph.py:two_configs",
                "three": "./graph.py:three",
            }
        },
        {"graph.py": RUNTIME_FACTORIES},
    )
    runtime = load_runtime(config, InMemorySaver())
    module = load_module_file(tmp_path / "graph.py")
    await runtime.get_graph("typed", access_context="threads.create_run", context={"tenant": "x"})
    await runtime.graph_schemas("typed")
    await runtime.get_state("annotated", "thread-z")
    await runtime.get_graph("untyped")
    assert module.SEEN == [
        ("typed", "threads.create_run", True),
        ("typed", "assistants.read", False),
        ("annotated", "threads.read", "thread-z"),
        ("config", ["callbacks", "configurable", "metadata", "recursion_limit", "tags"]),
    ]
    # Not a factory LangGraph's server would call: those graphs alone are unavailable.
    for graph_id in ("two_configs", "three"):
        with pytest.raises(GraphUnavailable, match=f"Graph '{graph_id}' failed to load: .*ServerRuntime"):
            runtime.resolve(graph_id)
        with pytest.raises(GraphUnavailable):
            await runtime.get_graph(graph_id)
    assert {a.graph_id for a in runtime.assistants()} >= {"two_configs", "three"}


def test_a_project_where_no_graph_loads_is_refused_with_every_reason(tmp_path: Path) -> None:
    config = project(
        tmp_path,
        {"graphs": {"a": "./missing.py:graph", "b": "./graph.py:nope"}},
        {"graph.py": SIMPLE_GRAPH},
    )
    with pytest.raises(
        InvalidInput, match=r"no graph could be loaded: .*does not exist.*no attribute 'nope'"
    ):
        load_runtime(config, InMemorySaver())


# -- langgraph.json sections --------------------------------------------------------------------------------


def test_every_key_runplane_does_not_act_on_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = project(
        tmp_path,
        {
            "graphs": {"g": "./graph.py:graph"},
            "python_version": "3.11",
            "http": {"app": "./app.py:app"},
            "webhooks": {"env_prefix": "X"},
            "store": {
                "path": "./store.py:store",
                "index": {"dims": 4, "embed": "fake:model", "extra_field": 1},
                "ttl": {"default_ttl": 5},
            },
            "checkpointer": {"backend": "default", "serde": {}, "ttl": {"default_ttl": 1, "bogus": 2}},
        },
        {"graph.py": SIMPLE_GRAPH},
    )
    with caplog.at_level(logging.INFO, logger="runplane.runtime.project"):
        read_project(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for key in ("'webhooks'", "'store.path'", "'store.index.extra_field'", "'checkpointer.serde'"):
        assert any(key in message for message in warnings), (key, warnings)
    assert any("'checkpointer.ttl.bogus'" in message for message in warnings)
    assert len(warnings) == 5  # http, the honoured keys and backend "default" are not warned about
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("python_version" in message for message in infos)


def test_store_index_embeddings_are_loaded_from_the_project_or_refused_clearly(tmp_path: Path) -> None:
    embeddings = "def embed(texts):\n    return [[float(len(t)), 1.0] for t in texts]\n"
    config = project(
        tmp_path,
        {"graphs": {"g": "./graph.py:graph"}, "store": {"index": {"dims": 2, "embed": "./emb.py:embed"}}},
        {"graph.py": SIMPLE_GRAPH, "emb.py": embeddings},
    )
    settings = store_settings(read_project(config))
    assert settings.index is not None and settings.ttl is None
    assert settings.index["embed"].embed_query("abc") == [3.0, 1.0]  # type: ignore[union-attr]
    for index, message in [
        ({"dims": 2, "embed": "./emb.py:missing"}, "has no attribute 'missing'"),
        ({"dims": 2, "embed": "nosuchprovider:some-model"}, "store.index.embed 'nosuchprovider:some-model'"),
        ({"embed": "./emb.py:embed"}, "needs 'dims'"),
    ]:
        config = project(tmp_path, {"graphs": {"g": "./graph.py:graph"}, "store": {"index": index}}, {})
        with pytest.raises(InvalidInput, match=message):
            store_settings(read_project(config))


async def test_a_graph_whose_own_code_fails_is_unavailable_and_the_others_load(tmp_path: Path) -> None:
    no_entry = SIMPLE_GRAPH + textwrap.dedent(
        """
        invalid = StateGraph(State)
        invalid.add_node("bump", bump)  # no edge from START: compiling it raises
        """
    )
    config = project(
        tmp_path,
        {"graphs": {"good": "./graph.py:graph", "invalid": "./graph.py:invalid"}},
        {"graph.py": no_entry},
    )
    runtime = load_runtime(config, InMemorySaver())
    assert await invoke(runtime, "good", {"n": 1}) == {"n": 2}
    with pytest.raises(
        GraphUnavailable, match=r"Graph 'invalid' failed to load: graph 'invalid': ValueError"
    ):
        await runtime.get_graph("invalid")


def test_the_sdk_server_runtime_is_the_two_variants_runplane_builds() -> None:
    """Contract with langgraph-sdk's beta `ServerRuntime` (runplane builds its private variants, as
    LangGraph's server does): if the SDK reshapes it, this fails before factories do."""
    variants = {get_origin(v) or v for v in get_args(ServerRuntime.__value__)}
    assert variants == {_ExecutionRuntime, _ReadRuntime}
    runtime = LangGraphRuntime({}, InMemorySaver())
    running = runtime.server_runtime("threads.create_run", context={"a": 1}, user="ada")
    assert isinstance(running, _ExecutionRuntime) and running.execution_runtime is running
    assert (
        running.context == {"a": 1} and running.user is not None and running.ensure_user().identity == "ada"
    )
    reading = runtime.server_runtime("threads.read")
    assert isinstance(reading, _ReadRuntime) and reading.execution_runtime is None and reading.user is None
