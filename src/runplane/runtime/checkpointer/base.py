"""What runplane needs of a LangGraph saver beyond LangGraph's API, and the write fence.

`SaverAdapter` is the seam: the worker, the runtime and the TTL sweep call it, never the saver's
tables. Each of LangGraph's savers gets one adapter class (`memory.py`, `sqlite.py`, `postgres.py`)
wrapping it, LangGraph's own class or the fenced subclass `open_checkpointer` opens alike. Where
LangGraph has a public method (`adelete_thread`, PostgreSQL's `aprune`) the adapter calls it; where
LangGraph leaves one unimplemented (`acopy_thread`, `adelete_for_runs`: its savers raise
`NotImplementedError` up to langgraph-checkpoint 4.3) or has none (a savepoint; rolling one run
back inside one thread; a thread's age), the adapter reads the saver's tables.

Checkpoint writes are fenced: an adapter puts a checkpoint or its pending writes only inside the
guard that `fence_writes` installs for the running attempt (`Store.hold_attempt`). An attempt
whose lease was lost while its step ran (a stalled process, a blocked event loop) thus cannot put
its late step over the newer attempt's, which would become the thread's latest state. The guard
is a ContextVar, so no call site shows it: LangGraph's tasks copy the context of the task that
runs the graph (`Execution.execute`), and only their writes are fenced.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from runplane.core.errors import InvalidInput
from runplane.runtime.checkpointer import _own_puts
from runplane.runtime.checkpointer._own_puts import saved_config as saved_config
from runplane.runtime.checkpointer._tables import Strategy

logger = logging.getLogger(__name__)

Guard = Callable[[], AbstractAsyncContextManager[None]]


class Committed(Protocol):
    """Waits until the writes a guard acknowledged before they committed have (raises if one
    failed). With `for_finish` (a run's end, its outcome next), the store may leave the writes it
    has not begun to the finish, which commits them with the outcome (`Store.writes_committed`)."""

    def __call__(self, *, for_finish: bool = False) -> Awaitable[None]: ...


#: The guard of the attempt whose task (and the tasks LangGraph starts from it) is running.
_guard: ContextVar[Guard | None] = ContextVar("runplane_checkpoint_guard", default=None)
_committed: ContextVar[Committed | None] = ContextVar("runplane_checkpoint_committed", default=None)


def fence_writes(guard: Guard, committed: Committed | None = None) -> None:
    """Make every checkpoint write of the current task, and of the tasks it starts, happen inside
    `guard()`, which raises (`LeaseLost`) when the attempt may no longer write; and, with
    `committed`, every read of the saver wait for it first: a guard may acknowledge a write before
    it commits (`Store.hold_attempt`), and a read in the run must see the run's own writes (a
    subgraph with its own persistent state, run twice in one run, reads what it wrote)."""
    _guard.set(guard)
    _committed.set(committed)


async def _own_writes_landed() -> None:
    committed = _committed.get()
    if committed is not None:
        await committed()


def _fence() -> AbstractAsyncContextManager[None]:
    guard = _guard.get()
    return guard() if guard is not None else nullcontext()


@dataclass(eq=False, slots=True)
class _NoCheckpointYet:
    thread_id: str
    #: Until the first read or write of the saver in the run's tasks (shared by the tasks LangGraph
    #: starts, which copy the context, not the object).
    holds: bool = True


_no_checkpoint_yet: ContextVar[_NoCheckpointYet | None] = ContextVar(
    "runplane_no_checkpoint_yet", default=None
)


def no_checkpoint_yet(thread_id: str) -> None:
    """Tell the saver that `thread_id` has no checkpoint yet, as a savepoint of the current task
    just found (`Savepoint.new_thread`).

    The graph's first read, LangGraph's `aget_tuple` of the thread's latest root checkpoint as it
    starts, is then answered "none" without asking the database: a round trip saved on the first
    run of every thread. Nothing else writes a thread while one of its runs runs: one run per
    thread, and state updates are refused meanwhile (`core.state_updates`). The first read or
    write of the saver in the task ends it.
    """
    _no_checkpoint_yet.set(_NoCheckpointYet(thread_id))


def _answered_empty(config: RunnableConfig) -> bool:
    known = _no_checkpoint_yet.get()
    if known is None or not known.holds:
        return False
    known.holds = False
    configurable = config.get("configurable", {})
    return (
        configurable.get("thread_id") == known.thread_id
        and not configurable.get("checkpoint_ns")
        and not configurable.get("checkpoint_id")
    )


def _wrote() -> None:
    known = _no_checkpoint_yet.get()
    if known is not None:
        known.holds = False


class FencedWrites(BaseCheckpointSaver[Any]):
    """Mixed into a saver: its writes run inside the current attempt's guard, if any; its reads
    in the attempt wait for the attempt's own writes (`fence_writes`); a new thread's first read
    is answered from its savepoint (`no_checkpoint_yet`), and a run's final read from its own
    puts (`_own_puts`).

    Overrides LangGraph's public `aput` / `aput_writes`, the two methods a running graph writes
    through (langgraph 1.0 to 1.2), and the reads `aget_tuple` and `alist`; deletes and copies are
    not fenced.
    """

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if _answered_empty(config):
            return None
        own = _own_puts.tracked(config)
        if own is not None and (answer := own.answer(config, self.serde)) is not None:
            return answer  # what the run put: its caller waits for those writes to commit
        await _own_writes_landed()
        return await super().aget_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        await _own_writes_landed()
        async for found in super().alist(config, filter=filter, before=before, limit=limit):
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        _wrote()
        with _own_puts.watching(config) as own:
            async with _fence():
                saved = await super().aput(config, checkpoint, metadata, new_versions)
            if own is not None:
                own.put(config, checkpoint, metadata)
        return saved

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        _wrote()
        with _own_puts.watching(config) as own:
            async with _fence():
                await super().aput_writes(config, writes, task_id, task_path)
            if own is not None:
                own.put_writes(config, list(writes), task_id, task_path)


#: A checkpoint of a thread: (namespace, checkpoint id).
CheckpointKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Savepoint:
    """The root checkpoint a run starts from, and the pending writes of every checkpoint the run
    may write onto without creating it: that one, and the latest checkpoint of each subgraph it
    interrupted in (a resume re-runs the subgraph from there). The writes are kept as the adapter
    that took them stores them (opaque to everyone else)."""

    thread_id: str
    checkpoint_id: str | None
    writes: dict[CheckpointKey, Any] = field(default_factory=dict)
    #: The adapter found no root checkpoint on the thread: it has none yet (`no_checkpoint_yet`).
    new_thread: bool = False


def resumed_namespaces(namespaces: Iterable[str], task_ids: Iterable[str]) -> list[str]:
    """The subgraph namespaces under the root tasks `task_ids` (those with pending writes on the
    start checkpoint: the only ones a resume re-enters). LangGraph names a subgraph's namespace
    `node:task_id`, nested ones `node:task_id|inner:task_id`."""
    tasks = set(task_ids)
    return [ns for ns in namespaces if ns and ns.split("|", 1)[0].rpartition(":")[2] in tasks]


class SaverAdapter(Protocol):
    """What runplane does to a LangGraph saver beyond LangGraph's API: undo one run, copy a
    thread, prune or expire threads.

    Why a rollback needs more than deleting checkpoints: a run that resumes a thread also writes
    onto the checkpoint it started from (the `Command(resume=...)` value, the re-run task's
    writes), and those would be replayed by the next run. So `rollback`

    1. deletes every checkpoint whose metadata has the run's `run_id` (LangGraph copies
       `config["metadata"]` into checkpoint metadata), with their pending writes, in every
       namespace (subgraphs too);
    2. puts the pending writes of the run's starting checkpoint back as the `Savepoint` saw them,
       and those of the subgraph checkpoints a resume re-entered (an answer to an interrupt inside
       a subgraph is written onto the subgraph's checkpoint).
    """

    async def savepoint(self, thread_id: str, checkpoint_id: str | None = None) -> Savepoint:
        """Remember the root checkpoint a run starts from (`checkpoint_id`, else the thread's
        latest) and the pending writes the run may change (`Savepoint`). Cheap: two indexed reads
        for a thread at rest, one more per interrupted subgraph for a resume."""
        ...

    async def rollback(self, thread_id: str, run_id: str, point: Savepoint | None) -> None:
        """Undo what run `run_id` wrote to the thread, in one transaction: its checkpoints, and its
        writes on `point`. `point` is None when the run's starting state is unknown (a run
        recovered from a dead worker): only the checkpoints are deleted then."""
        ...

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint (all namespaces, with their writes and channel values) of
        `source_thread_id` to `target_thread_id`."""
        ...

    async def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint of a thread (a no-op for a thread without any)."""
        ...

    async def prune_keep_latest(self, thread_id: str) -> None:
        """Delete every checkpoint of the thread but the newest of each namespace, as LangGraph's
        `keep_latest` prune."""
        ...

    async def expired_threads(self, cutoff: str, limit: int) -> list[str]:
        """Up to `limit` threads whose latest root checkpoint id is below `cutoff`, oldest first
        (the `checkpointer.ttl` sweep)."""
        ...

    async def expire_thread(self, thread_id: str, cutoff: str, strategy: Strategy) -> None:
        """Apply `strategy` to one thread if it is still older than `cutoff`, checked as it
        deletes: a run may have written to it since it was found expired."""
        ...


class PublicSaverAdapter:
    """A saver runplane has no adapter for (a third party's): LangGraph's public API only.
    Rollback deletes the run's checkpoints where the saver implements `adelete_for_runs`, and
    restores no pending writes; copying needs `acopy_thread`."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.saver = saver

    async def savepoint(self, thread_id: str, checkpoint_id: str | None = None) -> Savepoint:
        return Savepoint(thread_id, None)

    async def rollback(self, thread_id: str, run_id: str, point: Savepoint | None) -> None:
        # `adelete_for_runs` is in langgraph-checkpoint 4.1 and later, `NotImplementedError` by default.
        delete_for_runs = getattr(self.saver, "adelete_for_runs", None)
        try:
            if delete_for_runs is None:
                raise NotImplementedError
            await delete_for_runs([run_id])
        except NotImplementedError:
            logger.warning(
                "cannot roll back run %s: %s deletes no checkpoints by run",
                run_id,
                type(self.saver).__name__,
                extra={"action": "rollback", "run_id": run_id},
            )

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        copy = getattr(self.saver, "acopy_thread", None)  # langgraph-checkpoint 4.1 and later
        if copy is None:
            raise NotImplementedError(f"{type(self.saver).__name__} copies no threads")
        await copy(source_thread_id, target_thread_id)

    async def delete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def prune_keep_latest(self, thread_id: str) -> None:
        prune = getattr(self.saver, "aprune", None)  # langgraph-checkpoint 4.1 and later
        if prune is None:
            raise NotImplementedError(f"{type(self.saver).__name__} prunes no threads")
        await prune([thread_id], strategy="keep_latest")

    async def expired_threads(self, cutoff: str, limit: int) -> list[str]:
        raise InvalidInput(f"'checkpointer.ttl' is not supported for {type(self.saver).__name__}")

    async def expire_thread(self, thread_id: str, cutoff: str, strategy: Strategy) -> None:
        raise InvalidInput(f"'checkpointer.ttl' is not supported for {type(self.saver).__name__}")
