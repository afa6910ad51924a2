"""`LangGraphRuntime`: the graphs of a `langgraph.json`, and thread state over LangGraph's checkpointer.

Reading the project (graph specs, env, dependencies, factories) is `runtime.project`'s. A graph
that fails to load does not stop the others: it is logged, listed, and every use of it answers
`GraphUnavailable` with the reason.
"""

from __future__ import annotations

import copy
import inspect
import logging
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig, ensure_config
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from langgraph.store.base import BaseStore
from langgraph_sdk.auth.types import BaseUser
from pydantic import TypeAdapter, create_model

from runplane.core.errors import GraphUnavailable, InvalidInput, NotFound
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.models import Json
from runplane.runtime import checkpointer as checkpoints
from runplane.runtime import thread_maintenance
from runplane.runtime.project import (
    DEMO_CONFIG,
    AccessContext,
    FactoryCall,
    Project,
    factory_call,
    load_graph_value,
    load_module_file,
    read_project,
)
from runplane.runtime.serde import config_checkpoint, jsonable, thread_state
from runplane.runtime.thread_state import apply_supersteps

__all__ = ["DEMO_CONFIG", "LangGraphRuntime", "RunUser", "load_module_file", "load_runtime"]

logger = logging.getLogger(__name__)

try:  # langgraph-sdk >= 0.3; see `runtime.project`
    from langgraph_sdk.runtime import _ExecutionRuntime, _ReadRuntime
except ImportError:  # pragma: no cover - an SDK without ServerRuntime: factories take the config only
    _ExecutionRuntime = _ReadRuntime = None  # type: ignore[assignment,misc]

#: Configurable keys the server sets itself; hidden from the config schema, as LangGraph does.
_SERVER_CONFIGURABLE = (
    "__pregel_checkpointer",
    "__pregel_store",
    "checkpoint_id",
    "checkpoint_ns",
    "thread_id",
)


class RunUser:
    """The user a `ServerRuntime` names when the API authenticated one: runplane keeps the
    identity of each run's owner (`langgraph_sdk.auth.types.BaseUser`)."""

    def __init__(self, identity: str) -> None:
        self._identity = identity

    def __repr__(self) -> str:
        return f"RunUser({self._identity!r})"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def display_name(self) -> str:
        return self._identity

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def permissions(self) -> list[str]:
        return []

    def __getitem__(self, key: str) -> Any:
        return {"identity": self._identity, "display_name": self._identity}[key]


def load_runtime(
    config: str | Path | Project | None,
    checkpointer: BaseCheckpointSaver[Any],
    *,
    store: BaseStore | None = None,
) -> LangGraphRuntime:
    """Load a langgraph.json (a path, an already read `Project`, or None: the demo graphs) into a
    runtime that uses `checkpointer`. A graph that fails to load is logged and served as
    unavailable; the others are served.

    Raises:
        InvalidInput: the file or its env is invalid, or no graph at all could be loaded.
    """
    project = config if isinstance(config, Project) else read_project(config)
    values: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for graph_id, spec in project.specs.items():
        try:
            if isinstance(spec, InvalidInput):
                raise spec
            values[graph_id] = load_graph_value(spec, project.base_dir)
        except Exception as exc:
            # Whatever the graph's own code raised (compiling an invalid StateGraph, say): it is
            # this graph's failure, not the server's.
            reason = (
                exc.message
                if isinstance(exc, InvalidInput)
                else f"graph {graph_id!r}: {type(exc).__name__}: {exc}"
            )
            broken[graph_id] = reason
            logger.error(
                "GRAPH NOT LOADED: %s (the other graphs are served; runs on %r are refused)",
                reason,
                graph_id,
                extra={"action": "graph_load_failed", "graph_id": graph_id},
            )
    if not values:
        raise InvalidInput("no graph could be loaded: " + "; ".join(broken.values()))
    descriptions = {
        graph_id: spec.description
        for graph_id, spec in project.specs.items()
        if not isinstance(spec, InvalidInput)
    }
    return LangGraphRuntime(values, checkpointer, store=store, descriptions=descriptions, broken=broken)


@asynccontextmanager
async def _entered(value: Any) -> AsyncIterator[Any]:
    """What a factory returned, resolved: awaited if a coroutine, entered if a context manager."""
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, AbstractAsyncContextManager):
        async with value as entered:
            yield entered
    elif isinstance(value, AbstractContextManager):
        with value as entered:
            yield entered
    else:
        yield value


class LangGraphRuntime:
    """The registry of graphs plus thread-state operations (implements `core.graphs.GraphRuntime`).

    Args:
        graphs: graph id -> compiled graph or factory.
        checkpointer: attached to every graph it returns.
        store: LangGraph's long-term memory store, attached as well (and given to factories).
        descriptions: graph id -> description of its default assistant.
        broken: graph id -> why it failed to load; listed, but refused with `GraphUnavailable`.
    """

    def __init__(
        self,
        graphs: Mapping[str, Any],
        checkpointer: BaseCheckpointSaver[Any],
        *,
        store: BaseStore | None = None,
        descriptions: Mapping[str, str | None] | None = None,
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self.checkpointer = checkpointer
        self.store = store
        self._factories: dict[str, tuple[Any, FactoryCall]] = {}
        self._compiled: dict[str, Pregel] = {}
        self._broken = dict(broken or {})
        for graph_id, value in graphs.items():
            if isinstance(value, Pregel):
                self._compiled[graph_id] = self._attach(graph_id, value)
            else:
                self._factories[graph_id] = (value, factory_call(graph_id, value))
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
            for graph_id in [*graphs, *self._broken]
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

    def _unavailable(self, graph_id: str) -> GraphUnavailable:
        return GraphUnavailable(f"Graph '{graph_id}' failed to load: {self._broken[graph_id]}")

    # -- registry ---------------------------------------------------------------------------------

    def assistants(self) -> list[Assistant]:
        return list(self._assistants.values())

    def resolve(self, assistant_id: str) -> Assistant:
        """An assistant by id or graph id.

        Raises:
            NotFound: no such assistant.
            GraphUnavailable: its graph failed to load.
        """
        assistant = self._assistants.get(assistant_id)
        if assistant is None and (assistant_id in self.graph_ids or assistant_id in self._broken):
            assistant = self._assistants[default_assistant_id(assistant_id)]
        if assistant is None:
            raise NotFound(f"assistant {assistant_id} not found")
        if assistant.graph_id in self._broken:
            raise self._unavailable(assistant.graph_id)
        return assistant

    async def get_graph(
        self,
        graph_id: str,
        config: Json | None = None,
        *,
        access_context: AccessContext = "assistants.read",
        context: Any = None,
        user: str | None = None,
    ) -> Pregel:
        """The graph, for a use that ends with the call (`open_graph`: a context-manager factory's
        context is exited before the graph is returned).

        Raises:
            NotFound: unknown graph id.
            GraphUnavailable: the graph failed to load at start.
            InvalidInput: a factory returned something else than a graph.
        """
        async with self.open_graph(
            graph_id, config, access_context=access_context, context=context, user=user
        ) as graph:
            return graph

    @asynccontextmanager
    async def open_graph(
        self,
        graph_id: str,
        config: Json | None = None,
        *,
        access_context: AccessContext = "assistants.read",
        context: Any = None,
        user: str | None = None,
    ) -> AsyncIterator[Pregel]:
        """The graph with the checkpointer and store attached, for as long as the context is open.

        A factory is called for each use with what its parameters ask for: the config, and a
        `ServerRuntime` carrying `access_context`, the store, the user (the run's owner, None in
        single-user mode) and, for a run (`threads.create_run`), its `context`. It may return the
        graph, a coroutine of it, or a context manager yielding it (held open meanwhile), as
        LangGraph's server accepts.

        Raises:
            NotFound: unknown graph id.
            GraphUnavailable: the graph failed to load at start.
            InvalidInput: a factory returned something else than a graph.
        """
        graph = self._compiled.get(graph_id)
        if graph is not None:
            yield graph
            return
        if graph_id in self._broken:
            raise self._unavailable(graph_id)
        entry = self._factories.get(graph_id)
        if entry is None:
            raise NotFound(f"graph {graph_id!r} not found; expected one of {sorted(self.graph_ids)}")
        factory, call = entry
        runtime = self.server_runtime(access_context, context=context, user=user)
        value = factory(**call(ensure_config(cast(RunnableConfig, config or {})), runtime))
        async with _entered(value) as built:
            if isinstance(built, StateGraph):
                built = built.compile()
            if not isinstance(built, Pregel):
                raise InvalidInput(
                    f"graph factory {graph_id!r} returned a {type(built).__name__}, not a graph"
                )
            yield self._attach(graph_id, built)

    def server_runtime(
        self, access_context: AccessContext, *, context: Any = None, user: str | None = None
    ) -> Any:
        """The `langgraph_sdk.runtime.ServerRuntime` a factory gets, as LangGraph's server builds it:
        the execution variant (with a copy of the run's context) for a run, the read variant else."""
        if _ExecutionRuntime is None:  # pragma: no cover - an SDK without ServerRuntime
            return None
        run_user = cast(BaseUser, RunUser(user)) if user else None
        store = cast(BaseStore, self.store)
        if access_context == "threads.create_run":
            return _ExecutionRuntime(
                access_context=access_context,
                user=run_user,
                store=store,
                context=copy.copy(context) if context is not None else None,
            )
        return _ReadRuntime(access_context=access_context, user=run_user, store=store)

    # -- thread state -----------------------------------------------------------------------------

    async def _thread_graph(self, graph_id: str, thread_id: str) -> Pregel:
        return await self.get_graph(
            graph_id, {"configurable": {"thread_id": thread_id}}, access_context="threads.read"
        )

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

    async def bulk_update_state(self, graph_id: str, thread_id: str, supersteps: list[Json]) -> Json:
        return await apply_supersteps(await self._thread_graph(graph_id, thread_id), thread_id, supersteps)

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
