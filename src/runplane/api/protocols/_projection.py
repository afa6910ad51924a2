"""One run's stream, as the protocol events of thread streaming v2 (`langchain_protocol` shapes).

The worker publishes a run's output as the runs API's SSE events (`values`, `updates`, `custom`,
`tasks`, `messages` tuples, each suffixed `|<namespace>` inside subgraphs). `RunProjection` turns
them, in order, into protocol events: the same methods, plus what the protocol adds on top:

- `lifecycle`: `running` when the run starts, `started` when a subgraph namespace first appears,
  `completed` when its node's update reaches the parent, and the run's end (`completed`,
  `failed` with the error, or `interrupted`), closing every namespace still open first;
- `input.requested`: one per interrupt (from `__interrupt__` in `values` or `updates`);
- `messages`: each chat model message as `message-start`, `content-block-start` / `-delta` /
  `-finish` per text or tool-call block, and `message-finish` (langchain-core's compat bridge
  shapes), from the streamed chunks, or at once for a message a node returned whole;
- `tools`: `tool-started` when an AI message asking for a tool is complete, `tool-finished` (or
  `tool-error`) when its `ToolMessage` arrives.

The projection is deterministic: replaying a run's stream gives the same events in the same order,
which is what lets a reconnecting client resume by sequence number.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

Namespace = list[str]
#: Stream modes a protocol run is created with: everything the projection turns into events.
RUN_STREAM_MODES = ["values", "updates", "messages-tuple", "custom", "tasks"]


@dataclass(frozen=True, slots=True)
class ProtocolEvent:
    method: str
    namespace: tuple[str, ...]
    data: Any
    node: str | None = None

    def envelope(self, event_id: str, seq: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "namespace": list(self.namespace),
            "timestamp": int(time.time() * 1000),
            "data": self.data,
        }
        if self.node is not None:
            params["node"] = self.node
        return {"type": "event", "event_id": event_id, "seq": seq, "method": self.method, "params": params}


@dataclass
class _Block:
    wire: int
    kind: str  # "text" or "tool_call_chunk"
    text: str = ""
    id: str | None = None
    name: str | None = None
    args: str = ""


@dataclass
class _Message:
    namespace: tuple[str, ...]
    blocks: dict[Any, _Block] = field(default_factory=dict)
    usage: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _graph_name(segment: str) -> str:
    return segment.partition(":")[0]


def _text_blocks(content: Any) -> Iterator[tuple[Any, str]]:
    if isinstance(content, str):
        if content:
            yield "text", content
        return
    if isinstance(content, list):
        for position, block in enumerate(content):
            if isinstance(block, str) and block:
                yield "text", block
            elif isinstance(block, dict) and block.get("type") == "text" and block.get("text"):
                yield ("text", block.get("index", position)), str(block["text"])


def _finished_block(block: _Block) -> dict[str, Any]:
    if block.kind == "text":
        return {"type": "text", "text": block.text}
    try:
        args = orjson.loads(block.args or "{}")
    except orjson.JSONDecodeError:
        return {
            "type": "invalid_tool_call",
            "id": block.id,
            "name": block.name,
            "args": block.args,
            "error": "Failed to parse tool call arguments as JSON",
        }
    return {"type": "tool_call", "id": block.id or "", "name": block.name or "", "args": args}


class RunProjection:
    """Feeds on one run's stream events; yields its protocol events.

    Args:
        graph_name: the run's graph, named in its root lifecycle events.
    """

    def __init__(self, graph_name: str) -> None:
        self.graph_name = graph_name
        self.open: list[tuple[str, ...]] = []
        self.seen_interrupts: set[str] = set()
        self.interrupted = False
        self.error: str | None = None
        self._messages: dict[str, _Message] = {}
        self._done_messages: set[str] = set()
        self._tools_started: set[str] = set()

    def start(self) -> Iterator[ProtocolEvent]:
        yield ProtocolEvent("lifecycle", (), {"event": "running", "graph_name": self.graph_name})

    def feed(self, name: str, raw: bytes) -> Iterator[ProtocolEvent]:
        mode, *parts = name.split("|")
        namespace = tuple(parts)
        if mode in ("metadata", "end"):
            return
        data = orjson.loads(raw)
        if mode == "error":
            self.error = (
                f"{data.get('error')}: {data.get('message')}" if isinstance(data, dict) else str(data)
            )
            return
        if mode != "messages":
            yield from self._enter(namespace)
        if mode == "values":
            yield from self._interrupts(namespace, data)
            if isinstance(data, dict) and "__interrupt__" in data:
                data = {k: v for k, v in data.items() if k != "__interrupt__"}
                if not data:
                    return
            yield ProtocolEvent("values", namespace, data)
        elif mode == "updates":
            yield from self._updates(namespace, data)
        elif mode == "custom":
            yield ProtocolEvent("custom", namespace, {"payload": data})
        elif mode == "tasks":
            yield ProtocolEvent("tasks", namespace, data)
        elif mode == "messages" and isinstance(data, list) and len(data) == 2:
            yield from self._enter(namespace)
            yield from self._message(namespace, data[0], data[1] if isinstance(data[1], dict) else {})

    def finish(self, status: str) -> Iterator[ProtocolEvent]:
        """The run's end; `status` is its final run status."""
        for key in list(self._messages):
            yield from self._finish_message(key)
        if status in ("error", "timeout"):
            phase = "failed"
        elif status == "interrupted" or self.interrupted:
            phase = "interrupted"
        else:
            phase = "completed"
        for namespace in sorted(self.open, key=len, reverse=True):
            child = {
                "event": phase if phase != "failed" else "failed",
                "graph_name": _graph_name(namespace[-1]),
            }
            yield ProtocolEvent("lifecycle", namespace, child)
        self.open.clear()
        root: dict[str, Any] = {"event": phase, "graph_name": self.graph_name}
        if phase == "failed":
            root["error"] = self.error or "run failed"
        yield ProtocolEvent("lifecycle", (), root)

    # -- namespaces and interrupts ---------------------------------------------------------------

    def _enter(self, namespace: tuple[str, ...]) -> Iterator[ProtocolEvent]:
        for depth in range(1, len(namespace) + 1):
            prefix = namespace[:depth]
            if prefix not in self.open:
                self.open.append(prefix)
                yield ProtocolEvent(
                    "lifecycle", prefix, {"event": "started", "graph_name": _graph_name(prefix[-1])}
                )

    def _interrupts(self, namespace: tuple[str, ...], data: Any) -> Iterator[ProtocolEvent]:
        pending = data.get("__interrupt__") if isinstance(data, dict) else None
        for interrupt in pending if isinstance(pending, list) else []:
            if not isinstance(interrupt, dict) or not isinstance(interrupt.get("id"), str):
                continue
            if interrupt["id"] in self.seen_interrupts:
                continue
            self.seen_interrupts.add(interrupt["id"])
            self.interrupted = True
            value = interrupt.get("value")
            # `value` is what the SDK reads; `payload` what the protocol's normalizer names it.
            request = {"interrupt_id": interrupt["id"], "value": value, "payload": value}
            yield ProtocolEvent("input.requested", namespace, request)

    def _updates(self, namespace: tuple[str, ...], data: Any) -> Iterator[ProtocolEvent]:
        if not isinstance(data, dict):
            yield ProtocolEvent("updates", namespace, {"values": {"value": data}})
            return
        if "__interrupt__" in data:
            yield from self._interrupts(namespace, data)
            return
        if len(data) != 1:
            yield ProtocolEvent("updates", namespace, {"values": data})
            return
        [(node, values)] = data.items()
        yield ProtocolEvent(
            "updates",
            namespace,
            {"node": node, "values": values if isinstance(values, dict) else {"value": values}},
            node=node,
        )
        # The node's update reached this level: the subgraphs it ran in are done.
        for child in [ns for ns in self.open if ns[:-1] == namespace and _graph_name(ns[-1]) == node]:
            for inner in sorted((ns for ns in self.open if ns[: len(child)] == child), key=len, reverse=True):
                self.open.remove(inner)
                yield ProtocolEvent(
                    "lifecycle", inner, {"event": "completed", "graph_name": _graph_name(inner[-1])}
                )

    # -- messages and tools ----------------------------------------------------------------------

    def _message(
        self, namespace: tuple[str, ...], message: Any, metadata: dict[str, Any]
    ) -> Iterator[ProtocolEvent]:
        if not isinstance(message, dict):
            return
        kind = str(message.get("type", ""))
        key = str(message.get("id") or "")
        if kind == "tool":
            yield from self._tool_result(namespace, message)
            return
        if kind not in ("AIMessageChunk", "ai") or key in self._done_messages:
            return
        state = self._messages.get(key)
        if state is None:
            state = self._messages[key] = _Message(namespace)
            start: dict[str, Any] = {"event": "message-start", "role": "ai", "id": key}
            node = metadata.get("langgraph_node")
            if node is not None:
                start["metadata"] = {"langgraph_node": node}
            yield ProtocolEvent("messages", namespace, start)
        for block_key, text in _text_blocks(message.get("content")):
            block = yield from self._block(state, block_key, "text")
            block.text += text
            delta = {"type": "text-delta", "text": text}
            yield ProtocolEvent(
                "messages", namespace, {"event": "content-block-delta", "index": block.wire, "delta": delta}
            )
        chunks = message.get("tool_call_chunks") if kind == "AIMessageChunk" else None
        if kind == "ai":  # a whole message: its tool calls are complete
            chunks = [
                {
                    "id": c.get("id"),
                    "name": c.get("name"),
                    "args": orjson.dumps(c.get("args") or {}).decode(),
                    "index": i,
                }
                for i, c in enumerate(message.get("tool_calls") or [])
            ]
        for position, chunk in enumerate(chunks or []):
            index = chunk.get("index")
            block = yield from self._block(
                state, ("tool", index if index is not None else position), "tool_call_chunk", chunk
            )
            block.id = block.id or chunk.get("id")
            block.name = block.name or chunk.get("name")
            if chunk.get("args"):
                block.args += str(chunk["args"])
                delta = {"type": "tool-call-delta", "args": str(chunk["args"])}
                yield ProtocolEvent(
                    "messages",
                    namespace,
                    {"event": "content-block-delta", "index": block.wire, "delta": delta},
                )
        if message.get("usage_metadata"):
            state.usage = message["usage_metadata"]
        if message.get("response_metadata"):
            state.metadata.update(message["response_metadata"])
        if kind == "ai" or message.get("chunk_position") == "last":
            yield from self._finish_message(key)

    def _block(
        self, state: _Message, key: Any, kind: str, chunk: dict[str, Any] | None = None
    ) -> Generator[ProtocolEvent, None, _Block]:
        """The message's block for `key`, announced with `content-block-start` when new."""
        block = state.blocks.get(key)
        if block is not None:
            return block
        block = state.blocks[key] = _Block(len(state.blocks), kind)
        content: dict[str, Any] = {"type": "text", "text": ""}
        if kind == "tool_call_chunk":
            content = {
                "type": "tool_call_chunk",
                "id": chunk.get("id") if chunk else None,
                "name": chunk.get("name") if chunk else None,
                "args": "",
            }
        yield ProtocolEvent(
            "messages",
            state.namespace,
            {"event": "content-block-start", "index": block.wire, "content": content},
        )
        return block

    def _finish_message(self, key: str) -> Iterator[ProtocolEvent]:
        state = self._messages.pop(key)
        self._done_messages.add(key)
        calls = []
        for block in state.blocks.values():
            finished = _finished_block(block)
            if finished["type"] == "tool_call":
                calls.append(finished)
            yield ProtocolEvent(
                "messages",
                state.namespace,
                {"event": "content-block-finish", "index": block.wire, "content": finished},
            )
        finish: dict[str, Any] = {"event": "message-finish"}
        if state.usage:
            finish["usage"] = state.usage
        if state.metadata:
            finish["metadata"] = state.metadata
        yield ProtocolEvent("messages", state.namespace, finish)
        for call in calls:
            if call["id"] and call["id"] not in self._tools_started:
                self._tools_started.add(call["id"])
                started = {
                    "event": "tool-started",
                    "tool_call_id": call["id"],
                    "tool_name": call["name"],
                    "input": call["args"],
                }
                yield ProtocolEvent("tools", state.namespace, started)

    def _tool_result(self, namespace: tuple[str, ...], message: dict[str, Any]) -> Iterator[ProtocolEvent]:
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            return
        if message.get("status") == "error":
            yield ProtocolEvent(
                "tools",
                namespace,
                {"event": "tool-error", "tool_call_id": call_id, "message": str(message.get("content"))},
            )
        else:
            yield ProtocolEvent(
                "tools",
                namespace,
                {"event": "tool-finished", "tool_call_id": call_id, "output": message.get("content")},
            )
