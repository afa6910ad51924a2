"""The adapter of LangGraph's `AsyncPostgresSaver` (a `postgresql:` database; the postgres extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncCursor
from psycopg.abc import Params, Query
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runplane.db.postgres import HoldTransaction, joinable_hold, writing_only_through_hold
from runplane.runtime._databases import postgres_pool, setup_postgres_once
from runplane.runtime.checkpointer._tables import EXPIRED_THREADS, Strategy, expire_statements
from runplane.runtime.checkpointer.base import FencedWrites, Savepoint, resumed_namespaces, saved_config

#: Connections of the saver's own pool (reads; writes outside a run's fence).
POOL_SIZE = 8


class LoopSerializingPostgresSaver(AsyncPostgresSaver):
    """`AsyncPostgresSaver` serializing on the event loop, as the SQLite saver does, rather than in a
    thread of the default executor.

    `aput`, `aput_writes` and `_load_checkpoint_tuple` are LangGraph's (langgraph-checkpoint-postgres
    3.2, pinned) without their `asyncio.to_thread`: a run makes about ten of these calls, and each
    hop cost more CPU than serializing a checkpoint's few values (about 60 us on an idle loop, more
    when the thread waits for the GIL), and two wake-ups of latency.
    """

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable["checkpoint_ns"]
        copy = checkpoint.copy()
        copy["channel_values"] = inline = copy["channel_values"].copy()
        # Primitive values stay in the checkpoint's row; the others go to the blobs table.
        blob_values: dict[str, Any] = {}
        for channel, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blob_values[channel] = inline.pop(channel)
                inline[channel] = True
            elif value is None or isinstance(value, (str, int, float, bool)):
                pass
            else:
                blob_values[channel] = inline.pop(channel)
        async with self._cursor(pipeline=True) as cur:
            if blob_versions := {k: v for k, v in new_versions.items() if k in blob_values}:
                await cur.executemany(
                    self.UPSERT_CHECKPOINT_BLOBS_SQL,
                    self._dump_blobs(thread_id, checkpoint_ns, blob_values, blob_versions),
                )
            await cur.execute(
                self.UPSERT_CHECKPOINTS_SQL,
                (
                    thread_id,
                    checkpoint_ns,
                    checkpoint["id"],
                    configurable.get("checkpoint_id"),
                    Jsonb(copy),
                    Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
                ),
            )
        return saved_config(thread_id, checkpoint_ns, checkpoint["id"])

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        # LangGraph's rule: special channels (errors, interrupts...) replace, others keep the first.
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        query = self.UPSERT_CHECKPOINT_WRITES_SQL if special else self.INSERT_CHECKPOINT_WRITES_SQL
        configurable = config["configurable"]
        params = self._dump_writes(
            configurable["thread_id"],
            configurable["checkpoint_ns"],
            configurable["checkpoint_id"],
            task_id,
            task_path,
            writes,
        )
        async with self._cursor(pipeline=True) as cur:
            await cur.executemany(query, params)

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        # The synchronous saver's, which is the asynchronous one's without the thread hop.
        return PostgresSaver._load_checkpoint_tuple(cast(Any, self), value)


class FencedPostgresSaver(FencedWrites, LoopSerializingPostgresSaver):
    """`AsyncPostgresSaver` whose writes run inside the running attempt's guard, in the guard's own
    transaction when the store offers it (`PostgresStore.hold_attempt`).

    Overrides LangGraph's private `_cursor` (langgraph-checkpoint-postgres 3.2), the one door of
    every statement of the saver, in two ways:

    - a write inside a run's fence on the store's database joins the fence's transaction, which
      share-locks the run while the attempt holds it (`db.postgres.HoldTransaction`): its
      statements, parameters bound here, go with the fence's COMMIT. The checkpoint commits with
      the lease check or not at all (a stale attempt's write cannot land after its hold was lost),
      in one round trip, and the fence holds one connection, not two;
    - on a pool, a statement takes a pooled connection without LangGraph's saver-wide lock, which
      serializes every run's reads and writes on one statement at a time although a pooled
      connection is its caller's alone.
    """

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        with self._writing_only_through_hold():
            return await super().aput(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        with self._writing_only_through_hold():
            await super().aput_writes(config, writes, task_id, task_path)

    def _writing_only_through_hold(self) -> AbstractContextManager[None]:
        # LangGraph's `aput` and `aput_writes` write only through `_cursor`, which joins the fence's
        # hold: the fence may check the lease in the round trip that commits the checkpoint.
        conninfo = self.conn.conninfo if isinstance(self.conn, AsyncConnectionPool) else None
        if self.pipe is not None or not isinstance(conninfo, str) or not self.supports_pipeline:
            return nullcontext()
        return writing_only_through_hold(conninfo)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        pool = self.conn
        if self.pipe is not None or not isinstance(pool, AsyncConnectionPool) or not self.supports_pipeline:
            async with super()._cursor(pipeline=pipeline) as cur:
                yield cur
            return
        # LangGraph's writes (`aput`, `aput_writes`) ask for a pipeline; its reads do not.
        hold = joinable_hold(pool.conninfo) if pipeline and isinstance(pool.conninfo, str) else None
        if hold is not None:
            yield cast(AsyncCursor[DictRow], _DeferredWrites(hold))
            return
        async with pool.connection() as conn:
            if pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur


class _DeferredWrites:
    """The part of a cursor LangGraph's `aput` and `aput_writes` use (`execute`, `executemany`;
    they read no rows), handing each statement to the fence's transaction
    (`HoldTransaction.defer`)."""

    def __init__(self, hold: HoldTransaction) -> None:
        self._hold = hold

    async def execute(self, query: Query, params: Params | None = None) -> None:
        self._hold.defer(query, params)

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        for params in params_seq:
            self._hold.defer(query, params)


#: The pending writes' columns, in the order `rollback` puts them back.
_WRITE_COLUMNS = ("task_id", "task_path", "idx", "channel", "type", "blob")

#: The root checkpoint a run starts from (the given one, else the thread's latest) with its pending
#: writes (none: one row of NULLs); no row when there is no such checkpoint.
_SAVEPOINT = (
    "SELECT c.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob FROM ("
    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
    "AND (%s::text IS NULL OR checkpoint_id = %s::text) ORDER BY checkpoint_id DESC LIMIT 1) AS c "
    "LEFT JOIN checkpoint_writes AS w ON w.thread_id = %s AND w.checkpoint_ns = '' "
    "AND w.checkpoint_id = c.checkpoint_id"
)


class PostgresAdapter:
    """Savepoints, rollback, thread copies, prune and TTL expiry on an `AsyncPostgresSaver`."""

    #: The LangGraph class this adapts (instances of it and of its subclasses).
    saver_class = AsyncPostgresSaver

    def __init__(self, saver: AsyncPostgresSaver) -> None:
        self.saver = saver

    @staticmethod
    @asynccontextmanager
    async def open(conninfo: str) -> AsyncIterator[FencedPostgresSaver]:
        """The saver on a small pool to `conninfo`, its migrations applied (one process at a time)."""
        async with postgres_pool(conninfo, max_size=POOL_SIZE) as pool:
            saver = FencedPostgresSaver(pool)
            await setup_postgres_once(pool, saver.setup)
            yield saver

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncCursor[Any]]:
        """A dict-row cursor in one transaction on a connection of LangGraph's.

        Private internals, used here only: `_cursor()` (a cursor under the saver's lock) and the
        tables `checkpoints` (jsonb `metadata`), `checkpoint_blobs` and `checkpoint_writes`.
        Checked against langgraph-checkpoint-postgres 3.0.0 to 3.2.0 (`aprune`: 3.2.0 on).
        """
        async with self.saver._cursor() as cur, cur.connection.transaction():
            yield cur

    async def savepoint(self, thread_id: str, checkpoint_id: str | None = None) -> Savepoint:
        # A thread at rest, the common case: one statement (the latest root checkpoint, or the
        # given one, with its pending writes), autocommitted, one round trip.
        async with self.saver._cursor() as cur:
            await cur.execute(_SAVEPOINT, (thread_id, checkpoint_id, checkpoint_id, thread_id))
            rows = await cur.fetchall()
        if not rows:
            if checkpoint_id is None:
                return Savepoint(thread_id, None, new_thread=True)
            return Savepoint(thread_id, checkpoint_id, {("", checkpoint_id): []})
        checkpoint_id = str(rows[0]["checkpoint_id"])
        root = [tuple(row[column] for column in _WRITE_COLUMNS) for row in rows if row["task_id"] is not None]
        writes = {("", checkpoint_id): root}
        task_ids = {str(w[0]) for w in root}
        if task_ids:  # a resume: the subgraphs it re-enters, read in one snapshot
            async with self._transaction() as cur:
                await cur.execute(
                    "SELECT checkpoint_ns, MAX(checkpoint_id) AS head FROM checkpoints "
                    "WHERE thread_id = %s AND checkpoint_ns <> '' GROUP BY checkpoint_ns",
                    (thread_id,),
                )
                heads = {r["checkpoint_ns"]: r["head"] for r in await cur.fetchall()}
                for ns in resumed_namespaces(heads, task_ids):
                    writes[ns, heads[ns]] = await self._writes(cur, thread_id, ns, heads[ns])
        return Savepoint(thread_id, checkpoint_id, writes)

    @staticmethod
    async def _writes(cur: AsyncCursor[Any], thread_id: str, ns: str, checkpoint_id: str) -> list[Any]:
        await cur.execute(
            "SELECT task_id, task_path, idx, channel, type, blob FROM checkpoint_writes "
            "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
            (thread_id, ns, checkpoint_id),
        )
        return [tuple(r.values()) for r in await cur.fetchall()]

    async def rollback(self, thread_id: str, run_id: str, point: Savepoint | None) -> None:
        async with self._transaction() as cur:
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
            for (ns, checkpoint_id), writes in (point.writes if point is not None else {}).items():
                await cur.execute(
                    "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s "
                    "AND checkpoint_id = %s",
                    (thread_id, ns, checkpoint_id),
                )
                if writes:
                    await cur.executemany(
                        "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                        "task_path, idx, channel, type, blob) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        [(thread_id, ns, checkpoint_id, *w) for w in writes],
                    )

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        async with self._transaction() as cur:
            await cur.execute(
                "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "type, checkpoint, metadata) SELECT %s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
                "type, checkpoint, metadata FROM checkpoints WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target_thread_id, source_thread_id),
            )
            await cur.execute(
                "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                "SELECT %s, checkpoint_ns, channel, version, type, blob FROM checkpoint_blobs "
                "WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target_thread_id, source_thread_id),
            )
            await cur.execute(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, "
                "idx, channel, type, blob) SELECT %s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
                "channel, type, blob FROM checkpoint_writes WHERE thread_id = %s ON CONFLICT DO NOTHING",
                (target_thread_id, source_thread_id),
            )

    async def delete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def prune_keep_latest(self, thread_id: str) -> None:
        await self.saver.aprune([thread_id], strategy="keep_latest")

    async def expired_threads(self, cutoff: str, limit: int) -> list[str]:
        async with self._transaction() as cur:
            await cur.execute(EXPIRED_THREADS.format(p="%s"), (cutoff, limit))
            return [str(row["thread_id"]) for row in await cur.fetchall()]

    async def expire_thread(self, thread_id: str, cutoff: str, strategy: Strategy) -> None:
        checkpoints, writes = expire_statements("%s", "checkpoint_writes", strategy)
        async with self._transaction() as cur:
            # Channel values are blobs keyed by version, shared between checkpoints. A blob may go
            # once no remaining checkpoint refers to it, and only up to the newest version the old
            # checkpoints knew: a run writing to the thread right now writes newer versions before
            # the checkpoint that refers to them.
            await cur.execute(
                "SELECT c.checkpoint_ns, v.key AS channel, max(v.value) AS version FROM checkpoints c, "
                "jsonb_each_text(c.checkpoint -> 'channel_versions') v WHERE c.thread_id = %s "
                "AND c.checkpoint_id < %s GROUP BY c.checkpoint_ns, v.key",
                (thread_id, cutoff),
            )
            known = [(row["checkpoint_ns"], row["channel"], row["version"]) for row in await cur.fetchall()]
            await cur.execute(checkpoints, (thread_id, thread_id, cutoff))
            await cur.execute(writes, (thread_id,))
            for ns, channel, version in known:
                await cur.execute(
                    "DELETE FROM checkpoint_blobs b WHERE thread_id = %s AND checkpoint_ns = %s "
                    "AND channel = %s AND version <= %s AND NOT EXISTS (SELECT 1 FROM checkpoints c "
                    "WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns "
                    "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
                    (thread_id, ns, channel, version),
                )
