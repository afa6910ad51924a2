"""A thread's checkpoints: how many bytes they take, and pruning all but the latest.

Sizes are what the checkpointer's serializer writes (`serde.dumps_typed`), per checkpoint, per
channel version and per pending write, in LangGraph's `/threads/{id}/storage` shape. Pruning keeps
the newest checkpoint of each namespace with its pending writes, as LangGraph's `keep_latest`:
PostgreSQL's saver does it itself (`aprune`), SQLite and memory are done here.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.models import Json

try:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
except ImportError:  # pragma: no cover
    AsyncSqliteSaver = None  # type: ignore[assignment,misc]


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
    if isinstance(saver, InMemorySaver):
        for namespace, stored in saver.storage.get(thread_id, {}).items():
            if not stored:
                continue
            latest = max(stored)
            for checkpoint_id in [c for c in stored if c != latest]:
                del stored[checkpoint_id]
                saver.writes.pop((thread_id, namespace, checkpoint_id), None)
            kept = saver.serde.loads_typed(stored[latest][0]).get("channel_versions", {})
            for key in [k for k in saver.blobs if k[0] == thread_id and k[1] == namespace]:
                if kept.get(key[2]) != key[3]:
                    del saver.blobs[key]
        return
    if AsyncSqliteSaver is not None and isinstance(saver, AsyncSqliteSaver):
        latest = (
            "SELECT checkpoint_ns, max(checkpoint_id) FROM checkpoints WHERE thread_id = ? "
            "GROUP BY checkpoint_ns"
        )
        keep = f"(checkpoint_ns, checkpoint_id) NOT IN ({latest})"
        await saver.setup()
        async with saver.lock, saver.conn.cursor() as cur:
            await cur.execute(
                f"DELETE FROM writes WHERE thread_id = ? AND {keep}",
                (thread_id, thread_id),
            )
            await cur.execute(
                f"DELETE FROM checkpoints WHERE thread_id = ? AND {keep}",
                (thread_id, thread_id),
            )
            await saver.conn.commit()
        return
    await saver.aprune([thread_id], strategy="keep_latest")
