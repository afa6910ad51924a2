"""A thread's checkpoints: how many bytes they take, and pruning all but the latest.

Sizes are what the checkpointer's serializer writes (`serde.dumps_typed`), per checkpoint, per
channel version and per pending write, in LangGraph's `/threads/{id}/storage` shape. Pruning keeps
the newest checkpoint of each namespace with its pending writes, as LangGraph's `keep_latest`:
PostgreSQL's saver does it itself (`aprune`), SQLite and memory by their adapters
(`runtime/checkpointer/`).
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from runplane.core.models import Json
from runplane.runtime.checkpointer import adapter_for


def _size(saver: BaseCheckpointSaver[Any], value: Any) -> int:
    _, data = saver.serde.dumps_typed(value)
    return len(data)


async def thread_storage(saver: BaseCheckpointSaver[Any], thread_id: str) -> Json:
    """The bytes a thread's checkpoints take (LangGraph's storage report)."""
    by_channel: dict[str, dict[str, int]] = {}
    seen_versions: set[tuple[str, str, str]] = set()
    checkpoints = checkpoint_bytes = writes = write_bytes = 0
    async for found in saver.alist({"configurable": {"thread_id": thread_id}}):
        checkpoint: dict[str, Any] = dict(found.checkpoint)
        values: dict[str, Any] = checkpoint.pop("channel_values", {}) or {}
        checkpoints += 1
        checkpoint_bytes += _size(saver, checkpoint)
        namespace = str(found.config["configurable"].get("checkpoint_ns", ""))
        versions: dict[str, Any] = checkpoint.get("channel_versions", {}) or {}
        for channel, value in values.items():
            version = (namespace, channel, str(versions.get(channel, "")))
            if version in seen_versions:
                continue  # a version is stored once, whichever checkpoints share it
            seen_versions.add(version)
            entry = by_channel.setdefault(channel, {"versions": 0, "bytes": 0})
            entry["versions"] += 1
            entry["bytes"] += _size(saver, value)
        for _task, _channel, value in found.pending_writes or ():
            writes += 1
            write_bytes += _size(saver, value)
    channel_bytes = sum(entry["bytes"] for entry in by_channel.values())
    return {
        "total_bytes": checkpoint_bytes + channel_bytes + write_bytes,
        "checkpoints": {"count": checkpoints, "bytes": checkpoint_bytes},
        "channel_values": {
            "count": sum(entry["versions"] for entry in by_channel.values()),
            "bytes": channel_bytes,
            "by_channel": by_channel,
        },
        "pending_writes": {"count": writes, "bytes": write_bytes},
    }


async def prune_keep_latest(saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
    """Delete every checkpoint of the thread but the newest of each namespace."""
    await adapter_for(saver).prune_keep_latest(thread_id)
