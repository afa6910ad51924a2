"""The `GraphRegistry` protocol: which graphs (assistants) exist. Runnables stay opaque here."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from runplane.core.models import AssistantSeen, Json

#: The namespace LangGraph's server derives default assistant ids from (uuid5(ns, graph_id)).
ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


@functools.lru_cache(maxsize=4096)  # every request naming a graph asks; a uuid5 is a SHA-1
def default_assistant_id(graph_id: str) -> str:
    """The id of a graph's default assistant, stable across restarts and servers."""
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


@dataclass(frozen=True, slots=True)
class Assistant:
    """A graph plus configuration; one default assistant per graph."""

    assistant_id: str
    graph_id: str
    name: str
    created_at: datetime
    updated_at: datetime
    config: Json = field(default_factory=dict)
    context: Json = field(default_factory=dict)
    metadata: Json = field(default_factory=dict)
    version: int = 1
    description: str | None = None

    @property
    def seen(self) -> AssistantSeen:
        """Which assistant this is, for an admission to check it is still current."""
        return AssistantSeen(self.version, self.created_at)


class GraphRegistry(Protocol):
    """The graphs a server can run."""

    def assistants(self) -> list[Assistant]: ...

    def resolve(self, assistant_id: str) -> Assistant:
        """An assistant by id, or by graph id.

        Raises:
            NotFound: no such assistant or graph.
        """
        ...

    async def get_graph(self, graph_id: str, config: Json | None = None) -> Any:
        """The runnable graph (compiled, or built by its factory for `config`)."""
        ...


class GraphRuntime(GraphRegistry, Protocol):
    """The registry plus the thread-state operations the API needs, over LangGraph's checkpointer.

    Shapes follow `langgraph_sdk.schema` (`ThreadState`, `Checkpoint`), as plain JSON-able dicts.
    """

    async def get_state(
        self,
        graph_id: str,
        thread_id: str,
        *,
        checkpoint_id: str | None = None,
        checkpoint_ns: str = "",
        subgraphs: bool = False,
    ) -> Json:
        """The thread's state (a `ThreadState`); empty values when the thread has no checkpoint."""
        ...

    async def update_state(
        self,
        graph_id: str,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Json:
        """Write a new checkpoint; returns `{"checkpoint": {...}}` as the SDK expects."""
        ...

    async def bulk_update_state(self, graph_id: str, thread_id: str, supersteps: list[Json]) -> Json:
        """Apply supersteps (`[{"updates": [{"values", "command", "as_node"}]}]`), one checkpoint
        each; returns `{"checkpoint": {...}}` of the last one."""
        ...

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
        """Past states, newest first."""
        ...

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint of a thread to another thread id."""
        ...

    async def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of a thread."""
        ...

    async def graph_schemas(self, graph_id: str) -> Json:
        """`input_schema`, `output_schema`, `state_schema`, `config_schema`, `context_schema` (JSON
        schemas), as LangGraph's `/assistants/{id}/schemas`."""
        ...

    async def graph_drawable(self, graph_id: str, *, xray: bool | int = False) -> Json:
        """The graph's nodes and edges (`graph.get_graph().to_json()`)."""
        ...


@runtime_checkable
class SupportsCheckpointMaintenance(Protocol):
    """A runtime that can measure and prune a thread's checkpoints (`/threads/{id}/storage`,
    `POST /threads/prune` with `keep_latest`)."""

    async def thread_storage(self, thread_id: str) -> Json:
        """Bytes the thread's checkpoints take, as LangGraph reports them: `total_bytes`,
        `checkpoints`, `channel_values` (with `by_channel`) and `pending_writes`."""
        ...

    async def prune_checkpoints(self, thread_id: str) -> None:
        """Keep only the latest checkpoint of each of the thread's namespaces (and its writes)."""
        ...
