"""Run one attempt of one run: build the graph's config and input from `Run.kwargs`, stream the graph
to the run's event stream, and say how it ended (`Outcome`).

The executor knows LangGraph; it knows nothing of leases. The worker gives it two callbacks,
`publish` and `progress`, and a `guard` for checkpoint writes, all fenced (they stop the attempt
once its lease is lost), and cancels its task to interrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Literal, Protocol

from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.outputs import LLMResult
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.version import __version__ as langgraph_version

from runplane.core.errors import NotFound
from runplane.core.graphs import Assistant, GraphRuntime
from runplane.core.lifecycle import thread_status_after
from runplane.core.models import Json, Outcome, Run, RunStatus, TokenUsage
from runplane.core.run_kwargs import RunKwargs
from runplane.runtime import checkpointer as checkpoints
from runplane.runtime.serde import jsonable, thread_interrupts
from runplane.runtime.thread_state import state_command
from runplane.worker import faults
from runplane.worker.stream import EventMapper

logger = logging.getLogger(__name__)

Publish = Callable[[str, Any], Awaitable[None]]
Progress = Callable[[str | None, TokenUsage], Awaitable[None]]


class Runtime(GraphRuntime, Protocol):
    """What the worker needs of `runplane.runtime.graphs.LangGraphRuntime` (injected; never imported here)."""

    checkpointer: BaseCheckpointSaver[Any]

    async def get_graph(
        self,
        graph_id: str,
        config: Json | None = None,
        *,
        access_context: Literal["threads.create_run", "threads.update", "threads.read", "assistants.read"] = (
            "assistants.read"
        ),
        context: Any = None,
        user: str | None = None,
    ) -> Any:
        """The graph; a factory gets a `ServerRuntime` for `access_context` with `context` and `user`."""
        ...

    def open_graph(
        self,
        graph_id: str,
        config: Json | None = None,
        *,
        access_context: Literal["threads.create_run", "threads.update", "threads.read", "assistants.read"] = (
            "assistants.read"
        ),
        context: Any = None,
        user: str | None = None,
    ) -> AbstractAsyncContextManager[Any]:
        """`get_graph`, held open while the context is: a context-manager factory keeps its
        resources (connections, MCP sessions) for the whole run."""
        ...


#: Context schema class -> its field names (None: no named fields). Building the JSON schema costs
#: about 2 ms; a graph factory's graphs share their schema class.
_CONTEXT_KEYS: weakref.WeakKeyDictionary[Any, set[str] | None] = weakref.WeakKeyDictionary()


def context_schema_keys(graph: Any) -> set[str] | None:
    """The fields of the graph's context schema; None when it has none (or no named fields), then
    every key is passed, as LangGraph's server does."""
    schema_type = getattr(graph, "context_schema", None)
    if schema_type is None:
        return None
    with contextlib.suppress(KeyError, TypeError):
        return _CONTEXT_KEYS[schema_type]
    try:
        schema = graph.get_context_jsonschema()
    except Exception:
        logger.debug("could not build the context schema of %s", getattr(graph, "name", graph), exc_info=True)
        return None
    keys = set((schema or {}).get("properties") or {}) or None
    with contextlib.suppress(TypeError):  # not weakly referenceable: not cached
        _CONTEXT_KEYS[schema_type] = keys
    return keys


def run_context(graph: Any, given: Json) -> Json:
    """The context a run gives its graph: `given` without the keys its context schema does not
    declare, as LangGraph's server filters it (a dataclass schema refuses unknown keys). Never None:
    a run without context gets `{}`, so a dataclass or pydantic schema gets its defaults."""
    keys = context_schema_keys(graph)
    if keys is None:
        return dict(given)
    dropped = sorted(set(given) - keys)
    if dropped:
        logger.debug("context keys %s are not in the graph's context schema; dropped", dropped)
    return {key: value for key, value in given.items() if key in keys}


class UsageTracker(AsyncCallbackHandler):
    """Sums the token usage and remembers the model name of every chat model call of the run."""

    def __init__(self) -> None:
        self.usage = TokenUsage()
        self.model_name: str | None = None
        #: Set when something new was seen; the worker records progress and clears it.
        self.dirty = False
        self._requested: dict[uuid.UUID, str] = {}

    async def on_chat_model_start(
        self, serialized: dict[str, Any], messages: Any, *, run_id: uuid.UUID, **kwargs: Any
    ) -> None:
        name = (kwargs.get("metadata") or {}).get("ls_model_name")
        if name:
            self._requested[run_id] = str(name)

    async def on_llm_end(self, response: LLMResult, *, run_id: uuid.UUID, **kwargs: Any) -> None:
        requested = self._requested.pop(run_id, None)
        for generations in response.generations:
            for generation in generations:
                message = getattr(generation, "message", None)
                usage = getattr(message, "usage_metadata", None)
                if usage:
                    self.usage = self.usage + TokenUsage(
                        int(usage.get("input_tokens", 0)),
                        int(usage.get("output_tokens", 0)),
                        int(usage.get("total_tokens", 0)),
                    )
                metadata = getattr(message, "response_metadata", None) or {}
                name = metadata.get("model_name") or metadata.get("model") or requested
                if name:
                    self.model_name = str(name)
                self.dirty = True


#: The longest an emitting executor keeps the loop before the stream's readers get a turn.
_BURST_SLICE_SECONDS = 0.001


class Execution:
    """One attempt of a run.

    Args:
        run: the claimed run (its `attempt` is this attempt).
        runtime: graphs and the checkpointer.
        publish: sends one SSE event (name, payload) to the run's stream.
        progress: records model name and token usage.
        guard: the fence every checkpoint write of the attempt runs inside
            (`checkpointer.fence_writes`); raises `LeaseLost` once the attempt may not write.
        committed: waits until the writes the guard acknowledged before they committed have
            (raises `InfrastructureFault` when one failed for an outage); awaited before the
            checkpointer's database is read in the attempt, and before the run ends.
        default_timeout: seconds before the run ends `timeout` (None: never).
        retry: this attempt tried before and met an infrastructure fault: continue from the
            checkpoints it wrote, as a later attempt would.
    """

    def __init__(
        self,
        run: Run,
        runtime: Runtime,
        publish: Publish,
        progress: Progress,
        guard: checkpoints.Guard | None = None,
        committed: checkpoints.Committed | None = None,
        *,
        default_timeout: float | None = None,
        retry: bool = False,
    ) -> None:
        self.run = run
        self.retry = retry
        self.runtime = runtime
        self.publish = publish
        self.progress = progress
        self.guard = guard
        self.committed = committed
        self.kwargs: RunKwargs = run.kwargs
        self.timeout: float | None = default_timeout
        self.usage = UsageTracker()
        self.graph: Any = None
        #: What the graph gets as `runtime.context` (`prepare`).
        self.context: Json = {}
        #: Holds the graph open (a context-manager factory's resources) until `_stream` ends.
        self._graph_scope = AsyncExitStack()
        self.savepoint: checkpoints.Savepoint | None = None
        #: True when this attempt continues the checkpoints of an earlier attempt of the run.
        self.resumed = False
        self._root: RunnableConfig = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
        self._loop = asyncio.get_running_loop()
        #: When the executor last let other tasks run while emitting (`_emit`).
        self._slice_started = 0.0

    # -- setup ------------------------------------------------------------------------------------

    def _assistant(self) -> Assistant | None:
        try:
            return self.runtime.resolve(self.run.assistant_id)
        except NotFound:
            return None  # an assistant the API keeps itself; kwargs name the graph

    def build_config(self, assistant: Assistant | None, graph_id: str) -> RunnableConfig:
        """Assistant config, then the run's config, then what the server owns (thread and ids)."""
        run, base, own = self.run, (assistant.config if assistant else {}), self.kwargs.config
        configurable = {
            **(base.get("configurable") or {}),
            **(own.get("configurable") or {}),
            "thread_id": run.thread_id,
            "run_id": run.run_id,
            "graph_id": graph_id,
            "assistant_id": run.assistant_id,
        }
        # Who runs it, as LangGraph's server tells graphs (and, through the configurable, the
        # checkpoint metadata): "" in single-user mode.
        configurable.setdefault("user_id", run.owner)
        configurable["langgraph_auth_user_id"] = run.owner
        if checkpoint := self.kwargs.checkpoint:
            configurable.update({k: v for k, v in checkpoint.items() if k != "thread_id" and v is not None})
        if checkpoint_id := self.kwargs.checkpoint_id:
            configurable["checkpoint_id"] = checkpoint_id
        # LangGraph copies these into every checkpoint's metadata: `run_id` is how a rollback and a
        # recovered attempt find the checkpoints this run wrote.
        metadata = {
            **(assistant.metadata if assistant else {}),
            **(base.get("metadata") or {}),
            **(own.get("metadata") or {}),
            # The run's own metadata too, as LangGraph's server merges it into the config's.
            **run.metadata,
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "assistant_id": run.assistant_id,
            "graph_id": graph_id,
            "run_attempt": run.attempt,
            "langgraph_version": langgraph_version,
        }
        config: dict[str, Any] = {**base, **own, "configurable": configurable, "metadata": metadata}
        config["tags"] = [*(base.get("tags") or []), *(own.get("tags") or [])]
        config["callbacks"] = [self.usage]
        config.pop("run_id", None)
        if run.attempt == 1:
            # Tracing ids must be unique per attempt: only the first attempt uses the run id.
            try:
                config["run_id"] = uuid.UUID(run.run_id)
            except ValueError:
                pass
        return RunnableConfig(**config)  # type: ignore[typeddict-item]

    async def prepare(self) -> tuple[Any, RunnableConfig]:
        """Resolve the graph and build `(input, config)`; resume a crashed attempt's checkpoints."""
        assistant = self._assistant()
        graph_id = self.kwargs.graph_id or (assistant.graph_id if assistant else None)
        if graph_id is None:
            raise NotFound(f"assistant {self.run.assistant_id} not found")
        config = self.build_config(assistant, graph_id)
        # The run's context over the assistant's; without one, the run's configurable stands in
        # for it, as LangGraph's server does. It is passed to the graph only (never mirrored into
        # the configurable, whose values LangGraph copies into every checkpoint's metadata).
        own = self.kwargs.context or self.kwargs.config.get("configurable") or {}
        given = {**(assistant.context if assistant else {}), **own}
        self.graph = await self._graph_scope.enter_async_context(
            self.runtime.open_graph(
                graph_id,
                dict(config),
                access_context="threads.create_run",
                context=given,
                user=self.run.owner,
            )
        )
        try:
            return await self._inputs(config, given)
        except BaseException:
            await self._graph_scope.aclose()
            raise

    async def _inputs(self, config: RunnableConfig, given: Json) -> tuple[Any, RunnableConfig]:
        self.context = run_context(self.graph, given)
        command = self.kwargs.command
        graph_input = state_command(command) if command else self.kwargs.input
        saver = self.runtime.checkpointer
        if self.run.attempt > 1 or self.retry:
            head = await saver.aget_tuple(self._root)
            if head is not None and head.metadata.get("run_id") == self.run.run_id:
                # An earlier attempt of this run died after checkpointing: continue from its last
                # checkpoint instead of sending the input again (steps already done are not redone).
                self.resumed = True
                config["configurable"].pop("checkpoint_id", None)
                config["configurable"].pop("checkpoint_map", None)
                return None, config
        self.savepoint = await checkpoints.savepoint(
            saver, self.run.thread_id, config["configurable"].get("checkpoint_id")
        )
        if self.savepoint.new_thread:
            checkpoints.no_checkpoint_yet(self.run.thread_id)  # the graph's first read, answered
        return graph_input, config

    # -- running ----------------------------------------------------------------------------------

    async def execute(self) -> Outcome:
        """Run the graph to its end. Cancelling the calling task interrupts it (CancelledError)."""
        if self.guard is not None:
            # This task's context: the graph's writes only, and its reads after them.
            checkpoints.fence_writes(self.guard, self.committed)
        checkpoints.track_own_puts(self.run.thread_id)  # answers `ended`'s read
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                graph_input, config = await self.prepare()
                await self._stream(graph_input, config)
        except Exception as raised:
            if isinstance(raised, TimeoutError) and deadline.expired():
                return await self.ended("timeout", error=f"TimeoutError: run exceeded {self.timeout:g} s")
            if (fault := faults.as_fault(raised)) is not None:
                # Not the run's failure: the worker pauses the attempt and resumes it from its
                # last checkpoint once the dependency is back.
                raise fault from raised
            exc: BaseException = raised
            if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
                exc = exc.exceptions[0]
            logger.info(
                "run %s failed: %s: %s",
                self.run.run_id,
                type(exc).__name__,
                exc,
                extra={"action": "run_error", "run_id": self.run.run_id},
            )
            await self.publish("error", {"error": type(exc).__name__, "message": str(exc)})
            return await self.ended("error", error=f"{type(exc).__name__}: {exc}")
        return await self.ended("success")

    async def _stream(self, graph_input: Any, config: RunnableConfig) -> None:
        async with self._graph_scope:  # the graph's own resources end with the stream
            await self._stream_graph(graph_input, config)

    async def _stream_graph(self, graph_input: Any, config: RunnableConfig) -> None:
        requested = self.kwargs.stream_mode
        subgraphs = self.kwargs.stream_subgraphs
        mapper = EventMapper(requested, self._emit)
        options: dict[str, Any] = {
            "stream_mode": requested.langgraph(),
            "subgraphs": subgraphs,
            "context": self.context,
            "interrupt_before": self.kwargs.interrupt_before,
            "interrupt_after": self.kwargs.interrupt_after,
        }
        if self.kwargs.durability:
            options["durability"] = self.kwargs.durability
        if "events" in requested:
            root = str(config.get("run_id") or uuid.uuid4())
            config["run_id"] = uuid.UUID(root)
            async for event in self.graph.astream_events(graph_input, config, version="v2", **options):
                await mapper.event(event, root, subgraphs)
        else:
            async for item in self.graph.astream(graph_input, config, **options):
                await mapper.item(item, subgraphs)
        await mapper.close()
        await self.flush_progress()

    async def _emit(self, event: str, payload: Any) -> None:
        await self.publish(event, payload)
        if self.usage.dirty:
            await self.flush_progress()
        # A node that emits a burst without awaiting hands LangGraph's stream a backlog, which
        # `astream` then yields without ever suspending: the readers (SSE pumps) would see none of
        # it until the whole burst is mapped and published. Yielding once per slice sends what
        # is published so far, so the first event leaves about one slice after it came.
        now = self._loop.time()
        if now - self._slice_started >= _BURST_SLICE_SECONDS:
            await asyncio.sleep(0)
            self._slice_started = self._loop.time()

    async def flush_progress(self) -> None:
        if self.usage.dirty:
            self.usage.dirty = False
            await self.progress(self.usage.model_name, self.usage.usage)

    # -- endings ----------------------------------------------------------------------------------

    async def ended(self, status: RunStatus, *, error: str | None = None) -> Outcome:
        """The outcome for `status`, with the thread's state as the checkpointer now has it."""
        values: Json | None = None
        interrupts: Json = {}
        has_next = False
        with checkpoints.answering_from_own_puts() as answered_here:
            if self.committed is not None and not answered_here:
                # Outside the read's `try`: the state is the run's only once every write landed.
                await self.committed()
            if self.graph is not None:
                try:
                    snapshot = await self.graph.aget_state(self._root)
                    values = jsonable(snapshot.values) if snapshot.values is not None else None
                    interrupts = thread_interrupts(snapshot)
                    has_next = bool(snapshot.next)
                except Exception:
                    logger.exception("could not read the final state of run %s", self.run.run_id)
        if self.committed is not None and answered_here:
            # The state came from the run's own writes while they committed: it stands once they
            # have, or once the finish commits those left to it with the outcome.
            await self.committed(for_finish=True)
        usage = self.usage
        return Outcome(
            status=status,
            thread_status=thread_status_after(status, has_next=has_next),
            error=error,
            thread_values=values,
            thread_interrupts=interrupts,
            model_name=usage.model_name,
            usage=usage.usage if usage.model_name or usage.usage != TokenUsage() else None,
        )

    async def interrupted(self) -> Outcome:
        """The outcome of a run cancelled with `interrupt`: the checkpoints it reached stay."""
        if self.graph is None:
            try:
                assistant = self._assistant()
                graph_id = self.kwargs.graph_id or (assistant.graph_id if assistant else None)
                if graph_id is not None:
                    self.graph = await self.runtime.get_graph(graph_id, dict(self._root))
            except Exception:
                logger.exception("could not load the graph of cancelled run %s", self.run.run_id)
        return await self.ended("interrupted")

    async def rollback(self) -> None:
        """Undo every checkpoint write of this run (cancel `rollback`): the thread is as before it."""
        point = None if self.resumed else self.savepoint
        await checkpoints.rollback(self.runtime.checkpointer, self.run.thread_id, self.run.run_id, point)
