"""LangGraph's checkpointer, opened from our database URL, plus what LangGraph's savers lack.

The savers we use (`InMemorySaver`, `AsyncSqliteSaver`, `AsyncPostgresSaver`) implement neither
`adelete_for_runs` nor `acopy_thread` (langgraph-checkpoint 4.x leaves both to subclasses), and a
rollback needs more than deleting checkpoints anyway: a run that resumes a thread also writes onto
the checkpoint it started from (the `Command(resume=...)` value, the re-run task's writes), and
those would be replayed by the next run. So a rollback here

1. deletes every checkpoint whose metadata has the run's `run_id` (LangGraph copies
   `config["metadata"]` into checkpoint metadata), with their pending writes, in every namespace;
2. puts the pending writes of the run's starting checkpoint back as they were (`Savepoint`).

Each saver is handled through its own tables; an unknown saver gets its own `adelete_for_runs`.

Checkpoint writes are fenced: the savers opened here put a checkpoint or its pending writes only
inside the guard that `fence_writes` installs for the running attempt (`Store.hold_attempt`). An
attempt whose lease was lost while its step ran (a stalled process, a blocked event loop) thus
cannot put its late step over the newer attempt's, which would become the thread's latest state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.errors import InvalidInput
from runplane.runtime._databases import (
    database_kind,
    postgres_pool,
    setup_postgres_once,
    sqlite_path,
    tune_sqlite,
)

logger = logging.getLogger(__name__)

try:  # Optional extras: each backend imports only what it needs.
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
except ImportError:  # pragma: no cover - a hard dependency, but keep the import failure readable
    AsyncSqliteSaver = None  # type: ignore[assignment,misc]

try:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
except ImportError:  # pragma: no cover - the postgres extra is not installed
    AsyncPostgresSaver = None  # type: ignore[assignment,misc]


Guard = Callable[[], AbstractAsyncContextManager[None]]

#: The guard of the attempt whose task (and the tasks LangGraph starts from it) is running.
_guard: ContextVar[Guard | None] = ContextVar("runplane_checkpoint_guard", default=None)


def fence_writes(guard: Guard) -> None:
    """Make every checkpoint write of the current task, and of the tasks it starts, happen inside
    `guard()`, which raises (`LeaseLost`) when the attempt may no longer write."""
    _guard.set(guard)


def _fence() -> AbstractAsyncContextManager[None]:
    guard = _guard.get()
    return guard() if guard is not None else nullcontext()


class _FencedWrites(BaseCheckpointSaver[Any]):
    """Mixed into a saver: its writes run inside the current attempt's guard, if any."""

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        async with _fence():
            return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        async with _fence():
            await super().aput_writes(config, writes, task_id, task_path)


class FencedMemorySaver(_FencedWrites, InMemorySaver):
    pass


if AsyncSqliteSaver is not None:

    class FencedSqliteSaver(_FencedWrites, AsyncSqliteSaver):
        pass


if AsyncPostgresSaver is not None:

    class FencedPostgresSaver(_FencedWrites, AsyncPostgresSaver):
        pass


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """LangGraph's saver for `database_url`, with its tables created.

    `memory:` -> `InMemorySaver`; `sqlite:///file` (or a bare file path) -> `AsyncSqliteSaver` on
    the same file as the store (its own tables, its own connection); `postgresql://...` ->
    `AsyncPostgresSaver` on a small connection pool.

    Raises:
        InvalidInput: unknown scheme, or the backend's extra is not installed.
    """
    kind, database_url = database_kind(database_url)
    if kind == "memory":
        yield FencedMemorySaver()
    elif kind == "sqlite":
        if AsyncSqliteSaver is None:  # pragma: no cover
            raise InvalidInput("the sqlite checkpointer needs langgraph-checkpoint-sqlite")
        async with FencedSqliteSaver.from_conn_string(sqlite_path(database_url)) as saver:
            await saver.setup()  # also turns WAL on
            await tune_sqlite(saver.conn)
            yield saver
    else:
        if AsyncPostgresSaver is None:  # pragma: no cover
            raise InvalidInput("the postgres checkpointer needs: pip install 'runplane[postgres]'")
        async with postgres_pool(database_url, max_size=8) as pool:
            pg_saver = FencedPostgresSaver(pool)
            await setup_postgres_once(pool, pg_saver.setup)
            yield pg_saver


# -- savepoints and rollback ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Savepoint:
    """The root checkpoint a run starts from and that checkpoint's pending writes, raw."""

    thread_id: str
    checkpoint_id: str | None
    writes: Any = None


def _kind(saver: BaseCheckpointSaver[Any]) -> str:
    if isinstance(saver, InMemorySaver):
        return "memory"
    if AsyncSqliteSaver is not None and isinstance(saver, AsyncSqliteSaver):
        return "sqlite"
    if AsyncPostgresSaver is not None and isinstance(saver, AsyncPostgresSaver):
        return "postgres"
    return "other"


async def savepoint(
    saver: BaseCheckpointSaver[Any], thread_id: str, checkpoint_id: str | None = None
) -> Savepoint:
    """Remember the root checkpoint a run starts from (`checkpoint_id`, else the thread's latest)
    and that checkpoint's pending writes. Cheap: one or two indexed queries."""
    kind = _kind(saver)
    if kind == "memory":
        assert isinstance(saver, InMemorySaver)
        checkpoints = saver.storage.get(thread_id, {}).get("", {})
        checkpoint_id = checkpoint_id or (max(checkpoints) if checkpoints else None)
        if checkpoint_id is None:
            return Savepoint(thread_id, None)
        return Savepoint(thread_id, checkpoint_id, dict(saver.writes.get((thread_id, "", checkpoint_id), {})))
    if kind == "sqlite":
        await saver.setup()  # type: ignore[attr-defined]
        async with saver.lock, saver.conn.cursor() as cur:  # type: ignore[attr-defined]
            if checkpoint_id is None:
                await cur.execute(
                    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
                    "ORDER BY checkpoint_id DESC LIMIT 1",
                    (thread_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    return Savepoint(thread_id, None)
                checkpoint_id = str(row[0])
            await cur.execute(
                "SELECT task_id, task_path, idx, channel, type, value FROM writes "
                "WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
                (thread_id, checkpoint_id),
            )
            writes = [tuple(r) for r in await cur.fetchall()]
        return Savepoint(thread_id, checkpoint_id, writes)
    if kind == "postgres":
        async with saver._cursor() as cur:  # type: ignore[attr-defined]
            if checkpoint_id is None:
                await cur.execute(
                    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
                    "ORDER BY checkpoint_id DESC LIMIT 1",
                    (thread_id,),
                )
                row = await cur.fetchone()
                if row is None:
                    return Savepoint(thread_id, None)
                checkpoint_id = str(row["checkpoint_id"])
            await cur.execute(
                "SELECT task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
                "WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id = %s",
                (thread_id, checkpoint_id),
            )
            writes = [tuple(r.values()) for r in await cur.fetchall()]
        return Savepoint(thread_id, checkpoint_id, writes)
    return Savepoint(thread_id, None)


async def rollback(
    saver: BaseCheckpointSaver[Any], thread_id: str, run_id: str, point: Savepoint | None
) -> None:
    """Undo what run `run_id` wrote to the thread: its checkpoints, and its writes on `point`.

    `point` is None when the run's starting state is unknown (a run recovered from a dead worker):
    only the checkpoints are deleted then.
    """
    kind = _kind(saver)
    if kind == "memory":
        assert isinstance(saver, InMemorySaver)
        for ns, checkpoints in list(saver.storage.get(thread_id, {}).items()):
            for checkpoint_id, (_, metadata, _) in list(checkpoints.items()):
                if saver.serde.loads_typed(metadata).get("run_id") == run_id:
                    del checkpoints[checkpoint_id]
                    saver.writes.pop((thread_id, ns, checkpoint_id), None)
        if point is not None and point.checkpoint_id is not None:
            key = (thread_id, "", point.checkpoint_id)
            saver.writes.pop(key, None)
            if point.writes:
                saver.writes[key] = dict(point.writes)
    elif kind == "sqlite":
        await saver.setup()  # type: ignore[attr-defined]
        doomed = (
            "SELECT checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = ? "
            "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?"
        )
        async with saver.lock, saver.conn.cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(
                f"DELETE FROM writes WHERE thread_id = ? AND (checkpoint_ns, checkpoint_id) IN ({doomed})",
                (thread_id, thread_id, run_id),
            )
            await cur.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? "
                "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?",
                (thread_id, run_id),
            )
            if point is not None and point.checkpoint_id is not None:
                await cur.execute(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
                    (thread_id, point.checkpoint_id),
                )
                await cur.executemany(
                    "INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                    "channel, type, value) VALUES (?, '', ?, ?, ?, ?, ?, ?, ?)",
                    [(thread_id, point.checkpoint_id, *w) for w in point.writes or ()],
                )
            await saver.conn.commit()  # type: ignore[attr-defined]
    elif kind == "postgres":
        async with saver._cursor(pipeline=True) as cur:  # type: ignore[attr-defined]
            await cur.execute(
                "DELETE FROM checkpoint_writes w USING checkpoints c WHERE c.thread_id = %s "
                "AND c.metadata->>'run_id' = %s AND w.thread_id = c.thread_id "
                "AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id",
                (thread_id, run_id),
            )
            # Channel blobs are keyed by version and shared by later checkpoints; the run's own
            # versions are orphaned (never read again) rather than tracked down here.
            await cur.execute(
                "DELETE FROM checkpoints WHERE thread_id = %s AND metadata->>'run_id' = %s",
                (thread_id, run_id),
            )
            if point is not None and point.checkpoint_id is not None:
                await cur.execute(
                    "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = '' "
                    "AND checkpoint_id = %s",
                    (thread_id, point.checkpoint_id),
                )
                for w in point.writes or ():
                    await cur.execute(
                        "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                        "task_path, idx, channel, type, blob) VALUES (%s, '', %s, %s, %s, %s, %s, %s, %s)",
                        (thread_id, point.checkpoint_id, *w),
                    )
    else:
        try:
            await saver.adelete_for_runs([run_id])
        except NotImplementedError:
            logger.warning(
                "cannot roll back run %s: %s deletes no checkpoints by run",
                run_id,
                type(saver).__name__,
                extra={"action": "rollback", "run_id": run_id},
            )


# -- whole threads --------------------------------------------------------------------------------


async def copy_thread(saver: BaseCheckpointSaver[Any], source: str, target: str) -> None:
    """Copy every checkpoint (all namespaces, with writes and blobs) of `source` to `target`."""
    kind = _kind(saver)
    if kind == "memory":
        assert isinstance(saver, InMemorySaver)
        for ns, checkpoints in saver.storage.get(source, {}).items():
            saver.storage[target][ns].update(checkpoints)
        for (thread_id, ns, checkpoint_id), writes in list(saver.writes.items()):
            if thread_id == source:
                saver.writes[(target, ns, checkpoint_id)] = dict(writes)
        for key, blob in list(saver.blobs.items()):
            if key[0] == source:
                saver.blobs[(target, *key[1:])] = blob
    elif kind == "sqlite":
        await saver.setup()  # type: ignore[attr-defined]
        async with saver.lock, saver.conn.cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) SELECT ?, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints WHERE thread_id = ?",
                (target, source),
            )
            await cur.execute(
                "INSERT OR REPLACE INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
                "idx, channel, type, value) SELECT ?, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                "channel, type, value FROM writes WHERE thread_id = ?",
                (target, source),
            )
            await saver.conn.commit()  # type: ignore[attr-defined]
    elif kind == "postgres":
        async with saver._cursor(pipeline=True) as cur:  # type: ignore[attr-defined]
            await cur.execute(
                "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "type, checkpoint, metadata) SELECT %s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "type, checkpoint, metadata FROM checkpoints WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target, source),
            )
            await cur.execute(
                "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                "SELECT %s, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs "
                "WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target, source),
            )
            await cur.execute(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
                "idx, channel, type, blob) SELECT %s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                "channel, type, blob FROM checkpoint_writes WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target, source),
            )
    else:
        await saver.acopy_thread(source, target)


async def delete_thread(saver: BaseCheckpointSaver[Any], thread_id: str) -> None:
    """Delete every checkpoint of a thread (a no-op for a thread without any)."""
    await saver.adelete_thread(thread_id)
