"""The adapter of LangGraph's `AsyncSqliteSaver` (a `sqlite:` database: the store's own file)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from runplane.db.sqlite_inline import ConnectionLock, on_its_thread
from runplane.db.sqlite_writer import GroupCommit, shared
from runplane.runtime._databases import tune_sqlite
from runplane.runtime.checkpointer._tables import EXPIRED_THREADS, Strategy, expire_statements
from runplane.runtime.checkpointer.base import FencedWrites, Savepoint, resumed_namespaces, saved_config

#: The columns of a pending write that a savepoint keeps, in LangGraph's `writes` table.
_WRITE_COLUMNS = "task_id, task_path, idx, channel, type, value"

#: Per saver: `_WRITE_COLUMNS`, without `task_path` on a table from before 3.1.2 (which added it).
_write_columns: WeakKeyDictionary[AsyncSqliteSaver, str] = WeakKeyDictionary()

_PUT_CHECKPOINT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
    "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)

#: Checkpoints written by a run: LangGraph copies `config["metadata"]` (our `run_id`) into them.
_RUN_CHECKPOINTS = (
    "SELECT checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = ? "
    "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?"
)


class GroupCommitSqliteSaver(AsyncSqliteSaver):
    """`AsyncSqliteSaver` whose `aput` and `aput_writes` are each one transaction of a
    `GroupCommit`: the store's, on the store's file (committed with the store's transactions and
    the other runs' checkpoints), else one on the saver's own connection. LangGraph's versions make
    three and four thread hops and a COMMIT each.

    Private internals: the `checkpoints` and `writes` tables and the statements LangGraph writes
    them with (checked against langgraph-checkpoint-sqlite 3.0.3 to 3.1.2; `writes.task_path`
    came in 3.1.2 and is written only where the table has it).
    """

    #: Set by `SqliteAdapter.open`; None: LangGraph's own writes.
    writer: GroupCommit | None = None
    #: LangGraph's synchronous saver on the writer's connection (`_reader_on`).
    _reader: SqliteSaver | None = None
    #: Whether the `writes` table has LangGraph 3.1.2's `task_path` column.
    writes_task_path = True

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """LangGraph's own `SqliteSaver.get_tuple`, run on the writer's connection in its next hop
        (outside any transaction: it reads only committed checkpoints). LangGraph's async version
        makes six hops of its own."""
        if self.writer is None:
            return await super().aget_tuple(config)
        return await self.writer.run(lambda conn: self._reader_on(conn).get_tuple(config))

    def _reader_on(self, conn: sqlite3.Connection) -> SqliteSaver:
        """LangGraph's synchronous saver on `conn`, set up as this one is (on `conn`'s thread)."""
        reader = self._reader
        if reader is None or reader.conn is not conn:
            reader = self._reader = SqliteSaver(conn, serde=self.serde)
            reader.is_setup = True  # `setup()` made the tables
            if hasattr(self, "_has_task_path"):  # 3.1.2: False on a read-only file from before it
                reader._has_task_path = self._has_task_path
        return reader

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        if self.writer is None:
            return await super().aput(config, checkpoint, metadata, new_versions)
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        checkpoint_ns = configurable["checkpoint_ns"]
        type_, serialized = self.serde.dumps_typed(checkpoint)
        serialized_metadata = json.dumps(
            get_checkpoint_metadata(config, metadata), ensure_ascii=False
        ).encode("utf-8", "ignore")
        params = (
            str(thread_id),
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            type_,
            serialized,
            serialized_metadata,
        )
        await self.writer.transact(lambda conn: conn.execute(_PUT_CHECKPOINT, params).close())
        return saved_config(thread_id, checkpoint_ns, checkpoint["id"])

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        if self.writer is None:
            return await super().aput_writes(config, writes, task_id, task_path)
        # LangGraph's rule: special channels (errors, interrupts...) replace, others keep the first.
        verb = "REPLACE" if all(w[0] in WRITES_IDX_MAP for w in writes) else "IGNORE"
        configurable = config["configurable"]
        key = (
            str(configurable["thread_id"]),
            str(configurable["checkpoint_ns"]),
            str(configurable["checkpoint_id"]),
        )
        head: tuple[str, ...] = (*key, task_id, task_path)
        columns = _WRITE_COLUMNS
        if not self.writes_task_path:
            columns, head = _WRITE_COLUMNS.replace("task_path, ", ""), head[:-1]
        sql = (
            f"INSERT OR {verb} INTO writes (thread_id, checkpoint_ns, checkpoint_id, {columns}) "
            f"VALUES ({', '.join('?' * (len(head) + 4))})"
        )
        params = [
            (*head, WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value))
            for idx, (channel, value) in enumerate(writes)
        ]
        await self.writer.transact(lambda conn: conn.executemany(sql, params).close())


class FencedSqliteSaver(FencedWrites, GroupCommitSqliteSaver):
    """`AsyncSqliteSaver` whose writes run inside the running attempt's guard, group-committed."""


class SqliteAdapter:
    """Savepoints, rollback, thread copies, prune and TTL expiry on an `AsyncSqliteSaver`."""

    #: The LangGraph class this adapts (instances of it and of its subclasses).
    saver_class = AsyncSqliteSaver

    def __init__(self, saver: AsyncSqliteSaver) -> None:
        self.saver = saver
        #: The columns of `writes` a savepoint keeps (set by `_transaction`).
        self.columns = _WRITE_COLUMNS

    @staticmethod
    @asynccontextmanager
    async def open(path: str) -> AsyncIterator[FencedSqliteSaver]:
        """The saver on SQLite file `path` (or `:memory:`), with its tables created: its own
        connection to the store's file (the one place to change should it share the store's)."""
        # As LangGraph's `from_conn_string` opens it; usable from the event loop's thread too, for
        # the writer's inline batches (`runplane.db.sqlite_inline`).
        async with aiosqlite.connect(path, check_same_thread=False) as conn:
            saver = FencedSqliteSaver(conn)
            saver.lock = ConnectionLock()  # LangGraph takes it around its statements; counted
            await saver.setup()  # also turns WAL on
            await tune_sqlite(conn)
            columns = await conn.execute_fetchall("SELECT name FROM pragma_table_info('writes')")
            saver.writes_task_path = "task_path" in {column[0] for column in columns}
            # The store's writer when a store of this loop has the file open, else one of its own
            # on LangGraph's connection (LangGraph's `lock` keeps them apart).
            saver.writer = shared(path) or GroupCommit(lambda: conn, saver.lock)
            yield saver

    @asynccontextmanager
    async def _transaction(self, *, immediate: bool = False) -> AsyncIterator[aiosqlite.Cursor]:
        """A cursor on LangGraph's connection, committed at the end or rolled back on an error;
        `immediate`: the write lock taken first (other processes' writes wait for the commit).

        Private internals, used here only: `conn` (the aiosqlite connection), `lock` (held around
        every statement of LangGraph's own) and the tables `checkpoints` and `writes` (whose
        columns are read once). Checked against langgraph-checkpoint-sqlite 3.0.3 to 3.1.2.
        """
        saver = self.saver
        await saver.setup()
        async with saver.lock, saver.conn.cursor() as cur:
            try:
                if immediate:
                    await cur.execute("BEGIN IMMEDIATE")
                if saver not in _write_columns:
                    await cur.execute("SELECT name FROM pragma_table_info('writes')")
                    if "task_path" in {row[0] for row in await cur.fetchall()}:
                        _write_columns[saver] = _WRITE_COLUMNS
                    else:
                        _write_columns[saver] = _WRITE_COLUMNS.replace("task_path, ", "")
                self.columns = _write_columns[saver]
                yield cur
            except BaseException:
                # The connection is shared: a half-done rollback left open would be committed by
                # the next `aput`.
                await saver.conn.rollback()
                raise
            await saver.conn.commit()

    async def savepoint(self, thread_id: str, checkpoint_id: str | None = None) -> Savepoint:
        # Plain reads in one function: in the writer's next hop, or one hop on LangGraph's
        # connection (not eight).
        saver = self.saver
        writer = saver.writer if isinstance(saver, GroupCommitSqliteSaver) else None
        if writer is not None:
            return await writer.run(lambda conn: self._read_savepoint(conn, thread_id, checkpoint_id))
        await saver.setup()
        async with saver.lock:
            point: Savepoint = await on_its_thread(saver.conn, self._read_savepoint, thread_id, checkpoint_id)
        return point

    def _read_savepoint(
        self, conn: sqlite3.Connection, thread_id: str, checkpoint_id: str | None
    ) -> Savepoint:
        if self.saver not in _write_columns:
            found = {row[0] for row in conn.execute("SELECT name FROM pragma_table_info('writes')")}
            task_path = "task_path" in found
            _write_columns[self.saver] = (
                _WRITE_COLUMNS if task_path else _WRITE_COLUMNS.replace("task_path, ", "")
            )
        self.columns = _write_columns[self.saver]
        if checkpoint_id is None:
            row = conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
                "ORDER BY checkpoint_id DESC LIMIT 1",
                (thread_id,),
            ).fetchone()
            if row is None:
                return Savepoint(thread_id, None, new_thread=True)
            checkpoint_id = str(row[0])
        writes = {("", checkpoint_id): self._writes(conn, thread_id, "", checkpoint_id)}
        task_ids = {str(w[0]) for w in writes["", checkpoint_id]}
        if task_ids:  # a resume: the subgraphs it re-enters
            heads = {
                str(ns): str(head)
                for ns, head in conn.execute(
                    "SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints "
                    "WHERE thread_id = ? AND checkpoint_ns <> '' GROUP BY checkpoint_ns",
                    (thread_id,),
                )
            }
            for ns in resumed_namespaces(heads, task_ids):
                writes[ns, heads[ns]] = self._writes(conn, thread_id, ns, heads[ns])
        return Savepoint(thread_id, checkpoint_id, writes)

    def _writes(self, conn: sqlite3.Connection, thread_id: str, ns: str, checkpoint_id: str) -> list[Any]:
        found = conn.execute(
            f"SELECT {self.columns} FROM writes "
            "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            (thread_id, ns, checkpoint_id),
        )
        return [tuple(r) for r in found]

    async def rollback(self, thread_id: str, run_id: str, point: Savepoint | None) -> None:
        async with self._transaction() as cur:
            await cur.execute(
                "DELETE FROM writes WHERE thread_id = ? "
                f"AND (checkpoint_ns, checkpoint_id) IN ({_RUN_CHECKPOINTS})",
                (thread_id, thread_id, run_id),
            )
            await cur.execute(
                "DELETE FROM checkpoints WHERE thread_id = ? "
                "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?",
                (thread_id, run_id),
            )
            for (ns, checkpoint_id), writes in (point.writes if point is not None else {}).items():
                await cur.execute(
                    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    (thread_id, ns, checkpoint_id),
                )
                if writes:
                    values = ", ".join("?" * (3 + len(writes[0])))
                    await cur.executemany(
                        f"INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, {self.columns}) "
                        f"VALUES ({values})",
                        [(thread_id, ns, checkpoint_id, *w) for w in writes],
                    )

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        async with self._transaction() as cur:
            await cur.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) SELECT ?, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata FROM checkpoints WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )
            await cur.execute(
                f"INSERT OR REPLACE INTO writes (thread_id, checkpoint_ns, checkpoint_id, {self.columns}) "
                f"SELECT ?, checkpoint_ns, checkpoint_id, {self.columns} FROM writes WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            )

    async def delete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def prune_keep_latest(self, thread_id: str) -> None:
        latest = (
            "SELECT checkpoint_ns, max(checkpoint_id) FROM checkpoints WHERE thread_id = ? "
            "GROUP BY checkpoint_ns"
        )
        keep = f"(checkpoint_ns, checkpoint_id) NOT IN ({latest})"
        async with self._transaction() as cur:
            await cur.execute(f"DELETE FROM writes WHERE thread_id = ? AND {keep}", (thread_id, thread_id))
            await cur.execute(
                f"DELETE FROM checkpoints WHERE thread_id = ? AND {keep}", (thread_id, thread_id)
            )

    async def expired_threads(self, cutoff: str, limit: int) -> list[str]:
        async with self._transaction() as cur:
            await cur.execute(EXPIRED_THREADS.format(p="?"), (cutoff, limit))
            return [str(row[0]) for row in await cur.fetchall()]

    async def expire_thread(self, thread_id: str, cutoff: str, strategy: Strategy) -> None:
        checkpoints, writes = expire_statements("?", "writes", strategy)
        # Immediate: the age the delete re-checks is the age when it deletes.
        async with self._transaction(immediate=True) as cur:
            await cur.execute(checkpoints, (thread_id, thread_id, cutoff))
            await cur.execute(writes, (thread_id,))
