"""The root checkpoints a running attempt put on its thread, kept to answer its final read.

When a run's graph ends, the worker reads the thread's state (`Execution.ended`): LangGraph's
`aget_state`, whose `aget_tuple` asks the database for the thread's newest root checkpoint and the
writes pending on it. Those are what the attempt itself has just put: nothing else writes a thread
while one of its runs runs (one run per thread; state updates are refused meanwhile; a stale
attempt is fenced off). `track_own_puts` keeps each one as the saver returns it, and a read inside
`answering_from_own_puts` gets them back as the saver would: a round trip saved at the end of every
run, on every store.

The answer is a copy made through the saver's serializer, as the database's is: a value comes back
as the saver would give it (a tuple as a list, say), and the run's objects are not shared.

It answers only when it knows. Every put it saw returned, none failed and none is under way (a put
cancelled midway may have landed or not) as the read begins; the read asks for the newest
checkpoint of the root namespace. Otherwise the database is asked, as before.

An answer does not wait for the writes it comes from to commit (`Store.hold_attempt` acknowledges
them early): its caller reads while they commit, and waits for them after (`Execution.ended`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

#: A pending write as LangGraph's savers key it, (task id, index), and what they keep of it:
#: (task path, channel, value).
_WriteKey = tuple[str, int]
_Write = tuple[str, str, Any]


@dataclass(eq=False, slots=True)
class OwnPuts:
    """What the attempt running on `thread_id` put on its root namespace so far."""

    thread_id: str
    latest: CheckpointTuple | None = None
    #: Writes by the id of the checkpoint they were put on (a step's writes may return before the
    #: checkpoint they belong to does: LangGraph puts checkpoints in the background).
    writes: dict[str, dict[_WriteKey, _Write]] = field(default_factory=dict)
    under_way: int = 0
    #: A put failed or was cancelled: whether it landed is unknown.
    unsure: bool = False
    #: Within `answering_from_own_puts`: the newest checkpoint as it began, if it could answer.
    frozen: CheckpointTuple | None = None

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> None:
        checkpoint_id = checkpoint["id"]
        if self.latest is not None and checkpoint_id <= self.latest.config["configurable"]["checkpoint_id"]:
            return  # ids grow with time: the newest is what the database answers first
        parent_id = config["configurable"].get("checkpoint_id")
        self.latest = CheckpointTuple(
            config=saved_config(self.thread_id, "", checkpoint_id),
            checkpoint=checkpoint,
            metadata=get_checkpoint_metadata(config, metadata),
            parent_config=saved_config(self.thread_id, "", parent_id) if parent_id else None,
            pending_writes=[],
        )
        for older in [key for key in self.writes if key < checkpoint_id]:
            del self.writes[older]

    def put_writes(
        self, config: RunnableConfig, writes: list[tuple[str, Any]], task_id: str, task_path: str
    ) -> None:
        on = self.writes.setdefault(config["configurable"]["checkpoint_id"], {})
        # As LangGraph's savers store them: a special write (error, interrupt, ...) replaces the
        # task's earlier one, a regular write never does.
        replaces = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        for idx, (channel, value) in enumerate(writes):
            key = (task_id, WRITES_IDX_MAP.get(channel, idx))
            if replaces or key not in on:
                on[key] = (task_path, channel, value)

    def answerable(self) -> CheckpointTuple | None:
        if self.unsure or self.under_way:
            return None
        return self.latest

    def answer(self, config: RunnableConfig, serde: SerializerProtocol) -> CheckpointTuple | None:
        latest = self.frozen
        if latest is None:
            return None
        checkpoint_id = latest.config["configurable"]["checkpoint_id"]
        if config["configurable"].get("checkpoint_id") not in (None, checkpoint_id):
            return None
        on = self.writes.get(checkpoint_id, {})
        # The order every LangGraph saver returns them in (`writes_sort_key`: path, task, index).
        ordered = sorted(on.items(), key=lambda item: (item[1][0], *item[0]))
        return latest._replace(
            checkpoint=_through(serde, latest.checkpoint),
            pending_writes=[
                (task_id, channel, _through(serde, value)) for (task_id, _), (_, channel, value) in ordered
            ],
        )


def _through(serde: SerializerProtocol, value: Any) -> Any:
    return serde.loads_typed(serde.dumps_typed(value))


def saved_config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    """What a saver's `aput` returns: the config of the checkpoint it saved (also the config a
    saver's read gives the checkpoint and its parent)."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


_own_puts: ContextVar[OwnPuts | None] = ContextVar("runplane_own_puts", default=None)


def track_own_puts(thread_id: str) -> None:
    """Keep what the current task, and the tasks it starts, put on `thread_id`'s root namespace."""
    _own_puts.set(OwnPuts(thread_id))


def tracked(config: RunnableConfig) -> OwnPuts | None:
    """The tracker that keeps what `config` names (the tracked thread's root), if any."""
    own = _own_puts.get()
    if own is None:
        return None
    configurable = config.get("configurable", {})
    if configurable.get("thread_id") != own.thread_id or configurable.get("checkpoint_ns"):
        return None
    return own


@contextmanager
def watching(config: RunnableConfig) -> Iterator[OwnPuts | None]:
    """Around one saver write: the tracker to record it into once it returned (None: untracked).
    A write that raises, or is cancelled, leaves the tracker unsure."""
    own = tracked(config)
    if own is None:
        yield None
        return
    own.under_way += 1
    try:
        yield own
    except BaseException:
        own.unsure = True
        raise
    finally:
        own.under_way -= 1


@contextmanager
def answering_from_own_puts() -> Iterator[bool]:
    """Within: the saver answers the tracked thread's newest root checkpoint from its own puts,
    as they were as the block began. Yields whether it will (False: the database answers)."""
    own = _own_puts.get()
    if own is None:
        yield False
        return
    own.frozen = own.answerable()
    try:
        yield own.frozen is not None
    finally:
        own.frozen = None
