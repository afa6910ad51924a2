"""`LangGraphRuntime`: the graphs of a `langgraph.json`, and thread state over LangGraph's checkpointer.

Loading follows LangGraph's own server (`langgraph dev`):

- `graphs`: `{"id": "./path/to/file.py:attr"}` (relative to the json file's directory),
  `{"id": "package.module:attr"}`, or `{"id": {"path": ..., "description": ...}}`. The attribute
  is a compiled graph, a `StateGraph` (compiled here), or a factory `f()` / `f(config)` (sync or
  async) that builds the graph for each run.
- `env`: a mapping, or the path of a `.env` file; the values are set in `os.environ`.
- `dependencies`: local directories (e.g. `"."`) put on `sys.path` so graph files can import
  their own package.

A graph file is registered in `sys.modules` under a unique name *before* it runs, so that code
which looks its own module up while it is being defined (dataclasses, pydantic, `typing`
resolving `from __future__ import annotations` strings) finds it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from dotenv import dotenv_values
from langchain_core.runnables import RunnableConfig, ensure_config
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore
from pydantic import TypeAdapter, create_model

from runplane.core.errors import InvalidInput, NotFound
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.models import Json
from runplane.runtime import checkpointer as checkpoints
from runplane.runtime import thread_maintenance
from runplane.runtime.serde import config_checkpoint, jsonable, thread_state

logger = logging.getLogger(__name__)

#: The graphs served when no langgraph.json is given.
DEMO_CONFIG = Path(__file__).parent.parent / "demo" / "langgraph.json"

#: Configurable keys the server sets itself; hidden from the config schema, as LangGraph does.
_SERVER_CONFIGURABLE = (
    "__pregel_checkpointer",
    "__pregel_store",
    "checkpoint_id",
    "checkpoint_ns",
    "thread_id",
)


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """Where one graph of a langgraph.json comes from."""

    graph_id: str
    #: A file path (contains "/" or ends in ".py") or a dotted module name.
    source: str
    attr: str
    description: str | None = None


def parse_specs(graphs: Mapping[str, Any]) -> list[GraphSpec]:
    """The `graphs` section of a langgraph.json as specs.

    Raises:
        InvalidInput: an entry is neither "source:attr" nor {"path": "source:attr", ...}.
    """
    specs = []
    for graph_id, value in graphs.items():
        target = value.get("path") if isinstance(value, Mapping) else value
        if not isinstance(target, str) or ":" not in target:
            raise InvalidInput(
                f"graph {graph_id!r}: expected './file.py:variable' or 'package.module:variable', "
                f"got {value!r}"
            )
        source, attr = target.rsplit(":", 1)
        description = value.get("description") if isinstance(value, Mapping) else None
        specs.append(GraphSpec(graph_id, source, attr, description))
    return specs


def apply_env(env: Any, base_dir: Path) -> None:
    """Set the `env` section (a mapping, or a .env file relative to `base_dir`) in `os.environ`."""
    if env is None:
        return
    if isinstance(env, str):
        path = (base_dir / env).resolve()
        if not path.is_file():
            raise InvalidInput(f"env file {str(path)!r} does not exist")
        values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    elif isinstance(env, Mapping):
        values = {str(k): str(v) for k, v in env.items()}
    else:
        raise InvalidInput(f"env must be a file path or a mapping, got {type(env).__name__}")
    os.environ.update(values)


def add_dependencies(dependencies: Any, base_dir: Path) -> None:
    """Put the project directory and the local directories among `dependencies` on `sys.path`, as
    `langgraph dev` does from the project directory (package names are ignored: they are
    installed, not loaded)."""
    for dependency in [".", *(dependencies or [])]:
        path = (base_dir / dependency).resolve()
        if path.is_dir() and str(path) not in sys.path:
            sys.path.append(str(path))


def load_module_file(path: Path) -> ModuleType:
    """Execute a Python file as a module registered in `sys.modules` (once per file)."""
    path = path.resolve()
    if not path.is_file():
        raise InvalidInput(f"graph file {str(path)!r} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"runplane_graph_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec: dataclasses and pydantic resolve annotations through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_graph_value(spec: GraphSpec, base_dir: Path) -> Any:
    """The object a spec names: a compiled graph, a `StateGraph`, or a factory."""
    try:
        if "/" in spec.source or "\\" in spec.source or spec.source.endswith(".py"):
            module = load_module_file(base_dir / spec.source)
        else:
            module = importlib.import_module(spec.source)
    except InvalidInput:
        raise
    except Exception as exc:
        # The graph's own code failed (a syntax error, a missing package): say which graph.
        raise InvalidInput(
            f"graph {spec.graph_id!r}: importing {spec.source} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        value = getattr(module, spec.attr)
    except AttributeError:
        raise InvalidInput(f"graph {spec.graph_id!r}: {spec.source} has no attribute {spec.attr!r}") from None
    if isinstance(value, StateGraph):
        value = value.compile()
    if not isinstance(value, Pregel) and not callable(value):
        raise InvalidInput(f"graph {spec.graph_id!r}: {spec.attr!r} is a {type(value).__name__}, not a graph")
    if not isinstance(value, Pregel):
        _factory_arity(spec.graph_id, value)
    return value


def _factory_arity(graph_id: str, factory: Any) -> int:
    params = [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(params) > 1:
        raise InvalidInput(f"graph {graph_id!r}: a graph factory takes no argument or one (the config)")
    return len(params)


def load_runtime(
    config_path: str | None, checkpointer: BaseCheckpointSaver[Any], *, store: BaseStore | None = None
) -> LangGraphRuntime:
    """Load a langgraph.json (None: the demo graphs) into a runtime that uses `checkpointer`.

    Raises:
        InvalidInput: the file, a graph entry, or its env is invalid.
    """
    path = Path(config_path) if config_path is not None else DEMO_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("graphs"), dict) or not config["graphs"]:
        raise InvalidInput(f"{str(path)!r} has no graphs")
    base_dir = path.resolve().parent
    apply_env(config.get("env"), base_dir)
    if config_path is not None:  # the demo graphs import nothing of their own
        add_dependencies(config.get("dependencies"), base_dir)
    specs = parse_specs(config["graphs"])
    values = {spec.graph_id: load_graph_value(spec, base_dir) for spec in specs}
    descriptions = {spec.graph_id: spec.description for spec in specs}
    return LangGraphRuntime(values, checkpointer, store=store, descriptions=descriptions)


class LangGraphRuntime:
    """The registry of graphs plus thread-state operations (implements `core.graphs.GraphRuntime`).

    Args:
        graphs: graph id -> compiled graph or factory.
        checkpointer: attached to every graph it returns.
        store: LangGraph's long-term memory store, attached as well.
        descriptions: graph id -> description of its default assistant.
    """

    def __init__(
        self,
        graphs: Mapping[str, Any],
        checkpointer: BaseCheckpointSaver[Any],
        *,
        store: BaseStore | None = None,
        descriptions: Mapping[str, str | None] | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self.store = store
        self._factories: dict[str, Any] = {}
        self._compiled: dict[str, Pregel] = {}
        for graph_id, value in graphs.items():
            if isinstance(value, Pregel):
                self._compiled[graph_id] = self._attach(graph_id, value)
            else:
                self._factories[graph_id] = value
        loaded_at = datetime.now(UTC)
        descriptions = descriptions or {}
        self._assistants = {
            default_assistant_id(graph_id): Assistant(
                assistant_id=default_assistant_id(graph_id),
                graph_id=graph_id,
                name=graph_id,
                created_at=loaded_at,
                updated_at=loaded_at,
                metadata={"created_by": "system"},
                description=descriptions.get(graph_id),
            )
            for graph_id in graphs
        }

    def __repr__(self) -> str:
        saver = type(self.checkpointer).__name__
        return f"<LangGraphRuntime graphs={sorted(self.graph_ids)} checkpointer={saver}>"

    @property
    def graph_ids(self) -> list[str]:
        return [*self._compiled, *self._factories]

    def _attach(self, graph_id: str, graph: Pregel) -> Pregel:
        update: dict[str, Any] = {"checkpointer": self.checkpointer, "store": self.store}
        if graph.name == "LangGraph":
            update["name"] = graph_id
        return graph.copy(update=update)

    # -- registry ---------------------------------------------------------------------------------

    def assistants(self) -> list[Assistant]:
        return list(self._assistants.values())

    def resolve(self, assistant_id: str) -> Assistant:
        assistant = self._assistants.get(assistant_id)
        if assistant is None and assistant_id in self.graph_ids:
            assistant = self._assistants[default_assistant_id(assistant_id)]
        if assistant is None:
            raise NotFound(f"assistant {assistant_id} not found")
        return assistant

    async def get_graph(self, graph_id: str, config: Json | None = None) -> Pregel:
        """The graph with the checkpointer attached; a factory is called with `config`.

        Raises:
            NotFound: unknown graph id.
        """
        graph = self._compiled.get(graph_id)
        if graph is not None:
            return graph
        factory = self._factories.get(graph_id)
        if factory is None:
            raise NotFound(f"graph {graph_id!r} not found; expected one of {sorted(self.graph_ids)}")
        args = (
            (ensure_config(cast(RunnableConfig, config or {})),) if _factory_arity(graph_id, factory) else ()
        )
        value = factory(*args)
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, StateGraph):
            value = value.compile()
        if not isinstance(value, Pregel):
            raise InvalidInput(f"graph factory {graph_id!r} returned a {type(value).__name__}, not a graph")
        return self._attach(graph_id, value)

    # -- thread state -----------------------------------------------------------------------------

    async def _thread_graph(self, graph_id: str, thread_id: str) -> Pregel:
        return await self.get_graph(graph_id, {"configurable": {"thread_id": thread_id}})

    async def get_state(
        self,
        graph_id: str,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        checkpoint_ns: str = "",
        subgraphs: bool = False,
    ) -> Json:
        graph = await self._thread_graph(graph_id, thread_id)
        configurable = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
        if checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        snapshot = await graph.aget_state({"configurable": configurable}, subgraphs=subgraphs)
        return thread_state(snapshot)

    async def update_state(
        self,
        graph_id: str,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Json:
        graph = await self._thread_graph(graph_id, thread_id)
        configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        written = await graph.aupdate_state({"configurable": configurable}, values, as_node=as_node)
        return {"checkpoint": config_checkpoint(written)}

    async def get_history(
        self,
        graph_id: str,
        thread_id: str,
        *,
        limit: int = 10,
        before: str | None = None,
        metadata: Json | None = None,
        checkpoint_id: str | None = None,
    ) -> list[Json]:
        graph = await self._thread_graph(graph_id, thread_id)
        configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        history = graph.aget_state_history(
            {"configurable": configurable},
            filter=metadata or None,
            before={"configurable": {"checkpoint_id": before}} if before else None,
            limit=limit,
        )
        return [thread_state(snapshot) async for snapshot in history]

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await checkpoints.copy_thread(self.checkpointer, source_thread_id, target_thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        await checkpoints.delete_thread(self.checkpointer, thread_id)

    async def thread_storage(self, thread_id: str) -> Json:
        return await thread_maintenance.thread_storage(self.checkpointer, thread_id)

    async def prune_checkpoints(self, thread_id: str) -> None:
        await thread_maintenance.prune_keep_latest(self.checkpointer, thread_id)

    # -- introspection ----------------------------------------------------------------------------

    async def graph_schemas(self, graph_id: str) -> Json:
        graph = await self.get_graph(graph_id)
        return {
            "input_schema": _try(graph.get_input_jsonschema),
            "output_schema": _try(graph.get_output_jsonschema),
            "state_schema": _try(lambda: _state_jsonschema(graph)),
            "config_schema": _try(lambda: _configurable_jsonschema(graph)),
            "context_schema": _try(graph.get_context_jsonschema),
        }

    async def graph_drawable(self, graph_id: str, *, xray: bool | int = False) -> Json:
        graph = await self.get_graph(graph_id)
        drawable = jsonable((await graph.aget_graph(xray=xray)).to_json())
        for node in drawable.get("nodes", []):
            if isinstance(data := node.get("data"), dict):
                data.pop("id", None)  # LangGraph's server drops it (an internal runnable path)
        return dict(drawable)


def _try(build: Any) -> Any:
    try:
        return jsonable(build())
    except Exception as exc:
        logger.warning("could not build a graph schema: %s", exc)
        return None


def _state_jsonschema(graph: Pregel) -> Json:
    fields: dict[str, Any] = {}
    for key in graph.stream_channels_list:
        update_type = getattr(graph.channels[key], "UpdateType", Any)
        try:
            TypeAdapter(update_type).json_schema()
            fields[key] = (update_type, None)
        except Exception:
            fields[key] = (Any, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


def _configurable_jsonschema(graph: Pregel) -> Json:
    with warnings.catch_warnings():
        # Deprecated in LangGraph 1.0 in favour of context schemas; still the only source of the
        # `configurable` schema, which LangGraph's own server also serves this way.
        warnings.simplefilter("ignore", DeprecationWarning)
        config_schema = graph.config_schema()
    model_fields = getattr(config_schema, "model_fields", None) or {}
    if "configurable" not in model_fields:
        return {}
    annotation: Any = model_fields["configurable"].annotation
    schema: Json = TypeAdapter(annotation).json_schema()
    for key in _SERVER_CONFIGURABLE:
        schema.get("properties", {}).pop(key, None)
    config_type = getattr(graph, "config_type", None)
    if config_type is not None and hasattr(config_type, "__name__"):
        schema["title"] = config_type.__name__
    return schema
