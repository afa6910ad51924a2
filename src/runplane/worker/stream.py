"""LangGraph stream chunks -> SSE events, named and shaped as LangGraph's server sends them.

| requested mode   | LangGraph mode | SSE event(s)                                                  |
| ---------------- | -------------- | ------------------------------------------------------------- |
| values, updates, custom, tasks, checkpoints, debug | same | same name, chunk as is          |
| messages-tuple   | messages       | `messages`: `[message_chunk, metadata]`                       |
| messages         | messages       | `messages/metadata` once per message, `messages/partial` per  |
|                  |                | chunk, `messages/complete` once with the whole message        |
| events           | (astream_events v2) | `events`: each callback event                            |

With subgraphs, a chunk from namespace `ns` is sent as `"<event>|" + "|".join(ns)`, as LangGraph's
server does (`messages/*` events keep their plain names there too).

One deliberate difference: `messages/partial` carries only the new chunk (a delta). LangGraph's
server resends the whole message so far with every token, which is quadratic in the message length
(1.87 MB of SSE for a 3.9 KB reply); the complete message is sent once, in `messages/complete`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessageChunk, convert_to_messages, message_chunk_to_message

from runplane.runtime.serde import config_checkpoint

#: The modes LangGraph's `astream` knows (`langgraph.types.StreamMode`).
LANGGRAPH_MODES = frozenset({"values", "updates", "checkpoints", "tasks", "debug", "messages", "custom"})

Emit = Callable[[str, Any], Awaitable[None]]


def langgraph_modes(requested: Sequence[str]) -> list[str]:
    """The LangGraph stream modes that serve the requested SDK modes (unknown ones are dropped)."""
    modes = {"messages" if mode == "messages-tuple" else mode for mode in requested}
    return sorted(modes & LANGGRAPH_MODES)


def _debug_checkpoint(payload: dict[str, Any]) -> dict[str, Any]:
    """Add `checkpoint`/`parent_checkpoint` to a debug checkpoint payload, as LangGraph's server does."""
    tasks = []
    for task in payload.get("tasks", ()):
        state = task.get("state") if isinstance(task, dict) else None
        if isinstance(state, dict) and state.get("configurable"):
            task = {k: v for k, v in task.items() if k != "state"} | {"checkpoint": state["configurable"]}
        tasks.append(task)
    return {
        **payload,
        "checkpoint": config_checkpoint(payload.get("config")),
        "parent_checkpoint": config_checkpoint(payload.get("parent_config")),
        "tasks": tasks,
    }


class MessageRelay:
    """The `messages` mode: metadata once, deltas, then the complete message once."""

    def __init__(self) -> None:
        #: message id -> chunks so far (merged once, when the message completes).
        self._chunks: dict[str, list[BaseMessageChunk]] = {}
        self._done: set[str] = set()

    async def relay(self, item: tuple[Any, dict[str, Any]], emit: Emit) -> None:
        message, metadata = item
        if isinstance(message, dict):
            message = convert_to_messages([message])[0]
        key = str(message.id)
        if key not in self._chunks and key not in self._done:
            await emit("messages/metadata", {key: {"metadata": metadata}})
            self._chunks[key] = []
        if isinstance(message, BaseMessageChunk):
            if key in self._done:
                return
            self._chunks[key].append(message)
            await emit("messages/partial", [message])
            if getattr(message, "chunk_position", None) == "last":
                await self._complete(key, emit)
        elif key not in self._done:
            # A whole message (a node returned it without streaming it).
            self._chunks.pop(key, None)
            self._done.add(key)
            await emit("messages/complete", [message])

    async def _complete(self, key: str, emit: Emit) -> None:
        chunks = self._chunks.pop(key)
        self._done.add(key)
        if chunks:
            # One merge per message (adding chunks one by one would copy the text each time).
            merged = chunks[0] + chunks[1:] if len(chunks) > 1 else chunks[0]
            await emit("messages/complete", [message_chunk_to_message(merged)])

    async def flush(self, emit: Emit) -> None:
        """Complete the messages whose last chunk never said so (e.g. a provider without
        `chunk_position`), when the run's stream ends."""
        for key in list(self._chunks):
            await self._complete(key, emit)


class EventMapper:
    """Turns `(namespace, mode, chunk)` from LangGraph into SSE `(event, payload)` via `emit`."""

    def __init__(self, requested: Sequence[str], emit: Emit) -> None:
        self.requested = frozenset(requested)
        self.emit = emit
        self.tuples = "messages-tuple" in self.requested
        self.messages = MessageRelay() if "messages" in self.requested and not self.tuples else None

    async def chunk(self, ns: Sequence[str], mode: str, chunk: Any) -> None:
        suffix = "|" + "|".join(ns) if ns else ""
        if mode == "messages":
            if self.tuples:
                await self.emit("messages" + suffix, chunk)
            elif self.messages is not None:
                await self.messages.relay(chunk, self.emit)
            return
        if mode not in self.requested:
            return
        if mode == "debug" and isinstance(chunk, dict) and chunk.get("type") == "checkpoint":
            chunk = {**chunk, "payload": _debug_checkpoint(chunk.get("payload") or {})}
        await self.emit(mode + suffix, chunk)

    async def item(self, item: Any, subgraphs: bool) -> None:
        """One item of `graph.astream(..., stream_mode=[...])`."""
        if subgraphs:
            ns, mode, chunk = item
        else:
            (mode, chunk), ns = item, ()
        await self.chunk(ns, mode, chunk)

    async def event(self, event: dict[str, Any], root_run_id: str, subgraphs: bool) -> None:
        """One event of `graph.astream_events(..., version="v2")`: the root graph's own stream
        chunks are mapped like `astream` items; every other event goes out as `events`."""
        if event.get("event") == "on_chain_stream" and str(event.get("run_id")) == root_run_id:
            await self.item(event["data"]["chunk"], subgraphs)
        elif "events" in self.requested and "langsmith:hidden" not in (event.get("tags") or ()):
            await self.emit("events", event)

    async def close(self) -> None:
        if self.messages is not None:
            await self.messages.flush(self.emit)
