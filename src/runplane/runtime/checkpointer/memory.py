"""The adapter of LangGraph's `InMemorySaver` (the `memory:` database)."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from runplane.runtime.checkpointer._tables import Strategy
from runplane.runtime.checkpointer.base import FencedWrites, Savepoint, resumed_namespaces


class FencedMemorySaver(FencedWrites, InMemorySaver):
    """`InMemorySaver` whose writes run inside the running attempt's guard."""


class MemoryAdapter:
    """Savepoints, rollback, thread copies, prune and TTL expiry on an `InMemorySaver`.

    Private internals, read here only: the dicts `storage` (thread -> namespace -> checkpoint id
    -> (checkpoint, typed metadata, parent id)), `writes` ((thread, namespace, checkpoint id) ->
    {(task id, idx): write}) and `blobs` ((thread, namespace, channel, version) -> value).
    Checked against langgraph-checkpoint 3.0.0 to 4.3.2 (the contract tests).
    """

    def __init__(self, saver: InMemorySaver) -> None:
        self.saver = saver

    async def savepoint(self, thread_id: str, checkpoint_id: str | None = None) -> Savepoint:
        namespaces = self.saver.storage.get(thread_id, {})
        root = namespaces.get("", {})
        checkpoint_id = checkpoint_id or (max(root) if root else None)
        if checkpoint_id is None:
            return Savepoint(thread_id, None, new_thread=True)
        start = ("", checkpoint_id)
        writes = {start: dict(self.saver.writes.get((thread_id, *start), {}))}
        for ns in resumed_namespaces(namespaces, (task_id for task_id, _ in writes[start])):
            if namespaces[ns]:
                head = (ns, max(namespaces[ns]))
                writes[head] = dict(self.saver.writes.get((thread_id, *head), {}))
        return Savepoint(thread_id, checkpoint_id, writes)

    async def rollback(self, thread_id: str, run_id: str, point: Savepoint | None) -> None:
        # No await below: the event loop runs nothing else in between, as a transaction would.
        for ns, checkpoints in list(self.saver.storage.get(thread_id, {}).items()):
            for checkpoint_id, (_, metadata, _) in list(checkpoints.items()):
                if self.saver.serde.loads_typed(metadata).get("run_id") == run_id:
                    del checkpoints[checkpoint_id]
                    self.saver.writes.pop((thread_id, ns, checkpoint_id), None)
        for (ns, checkpoint_id), writes in (point.writes if point is not None else {}).items():
            key = (thread_id, ns, checkpoint_id)
            self.saver.writes.pop(key, None)
            if writes:
                self.saver.writes[key] = dict(writes)

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        for ns, checkpoints in self.saver.storage.get(source_thread_id, {}).items():
            self.saver.storage[target_thread_id][ns].update(checkpoints)
        for (thread_id, ns, checkpoint_id), writes in list(self.saver.writes.items()):
            if thread_id == source_thread_id:
                self.saver.writes[(target_thread_id, ns, checkpoint_id)] = dict(writes)
        blobs: dict[Any, Any] = self.saver.blobs
        for key, blob in list(blobs.items()):
            if key[0] == source_thread_id:
                blobs[(target_thread_id, *key[1:])] = blob

    async def delete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def prune_keep_latest(self, thread_id: str) -> None:
        saver = self.saver
        for namespace, stored in saver.storage.get(thread_id, {}).items():
            if not stored:
                continue
            latest = max(stored)
            for checkpoint_id in [c for c in stored if c != latest]:
                del stored[checkpoint_id]
                saver.writes.pop((thread_id, namespace, checkpoint_id), None)
            kept = saver.serde.loads_typed(stored[latest][0]).get("channel_versions", {})
            blobs: dict[Any, Any] = saver.blobs
            for key in [k for k in blobs if k[0] == thread_id and k[1] == namespace]:
                if kept.get(key[2]) != key[3]:
                    del blobs[key]

    async def expired_threads(self, cutoff: str, limit: int) -> list[str]:
        latest = {
            thread_id: max(namespaces[""])
            for thread_id, namespaces in self.saver.storage.items()
            if namespaces.get("")
        }
        return sorted((t for t, newest in latest.items() if newest < cutoff), key=latest.__getitem__)[:limit]

    async def expire_thread(self, thread_id: str, cutoff: str, strategy: Strategy) -> None:
        namespaces = self.saver.storage.get(thread_id, {})
        if not namespaces.get("") or max(namespaces[""]) >= cutoff:
            return
        if strategy == "delete":
            self.saver.delete_thread(thread_id)
            return
        for ns, checkpoints in namespaces.items():
            latest = max(checkpoints, default=None)
            for checkpoint_id in [c for c in checkpoints if c != latest]:
                del checkpoints[checkpoint_id]
                self.saver.writes.pop((thread_id, ns, checkpoint_id), None)
