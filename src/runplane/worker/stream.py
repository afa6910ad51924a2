"""LangGraph stream chunks -> SSE events, named and shaped as LangGraph's server sends them.

| requested mode   | LangGraph mode | SSE event(s)                                                  |
| ---------------- | -------------- | ------------------------------------------------------------- |
| values, updates, custom, tasks, checkpoints, debug | same | same name, chunk as is          |
| messages-tuple   | messages       | `messages`: `[message_chunk, metadata]`                       |
| messages         | messages       | `messages/metadata` once per message, `messages/partial` per  |
|                  |                | chunk with the whole message so far, `messages/complete` for  |
|                  |                | a message that arrived whole                                  |
| events           | (astream_events v2) | `events`: each callback event                            |

With subgraphs, a chunk from namespace `ns` is sent as `"<event>|" + "|".join(ns)`, as LangGraph's
server does (`messages/*` events keep their plain names there too).

`messages/partial` resends the whole message so far with every token, as LangGraph's server does
(clients replace the message with each payload), so its bytes grow with the square of the reply's
length; `messages-tuple` is the linear mode (one chunk per event). Clients that accept gzip get the
stream compressed (see `api/sse.py`), which removes most of that repetition on the wire.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessageChunk,
    BaseMessage,
    BaseMessageChunk,
    ToolMessageChunk,
    convert_to_messages,
    message_chunk_to_message,
)

from runplane.core.stream_modes import StreamModes
from runplane.runtime.serde import config_checkpoint

Emit = Callable[[str, Any], Awaitable[None]]


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
    """The `messages` mode, as LangGraph's server sends it: `messages/metadata` when a message is
    first seen, then for every chunk `messages/partial` with the whole message so far (clients
    replace the message with each payload), and `messages/complete` for a message that arrived whole
    (a node returned it without streaming it)."""

    def __init__(self) -> None:
        #: message id -> the message so far (chunks added up).
        self._messages: dict[str, BaseMessage] = {}

    async def relay(self, item: tuple[Any, dict[str, Any]], emit: Emit) -> None:
        message, metadata = item
        # A chunk streamed as a dict is shown as a chunk, an object chunk as its whole message.
        shown_as_chunk = False
        if isinstance(message, dict):
            message = _message_from_dict(message)
            shown_as_chunk = isinstance(message, BaseMessageChunk)
        key = str(message.id)
        so_far = self._messages.get(key)
        if so_far is None:
            self._messages[key] = message
            await emit("messages/metadata", {key: {"metadata": metadata}})
        else:
            self._messages[key] = so_far + message
        whole = self._messages[key]
        shown = whole if shown_as_chunk else _as_message(whole)
        event = "messages/partial" if isinstance(message, BaseMessageChunk) else "messages/complete"
        await emit(event, [shown])


def _message_from_dict(message: dict[str, Any]) -> BaseMessage:
    """A message a graph streamed as a dict; chunk types stay chunks, as on LangGraph's server."""
    kind = f"{message.get('type', '')} {message.get('role', '')}".lower()
    if "chunk" in kind:
        fields = {k: v for k, v in message.items() if k not in ("type", "role")}
        if "tool" in kind:
            return ToolMessageChunk(**fields)
        return AIMessageChunk(**fields)
    return convert_to_messages([message])[0]


def _as_message(message: BaseMessage) -> BaseMessage:
    """A chunk shown as its whole message (`AIMessageChunk` -> `ai`), as LangGraph's server does."""
    if isinstance(message, BaseMessageChunk):
        return message_chunk_to_message(message)
    return message


class EventMapper:
    """Turns `(namespace, mode, chunk)` from LangGraph into SSE `(event, payload)` via `emit`."""

    def __init__(self, requested: StreamModes, emit: Emit) -> None:
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
        """Nothing is held back: every event went out when its chunk came."""
