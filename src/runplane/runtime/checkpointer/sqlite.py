"""The adapter of LangGraph's `AsyncSqliteSaver` (a `sqlite:` database: the store's own file)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from weakref import WeakKeyDictionary

import aiosqlite
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from runplane.runtime._databases import tune_sqlite
from runplane.runtime.checkpointer._tables import EXPIRED_THREADS, Strategy, expire_statements
from runplane.runtime.checkpointer.base import FencedWrites, Savepoint, resumed_namespaces

#: The columns of a pending write that a savepoint keeps, in LangGraph's `writes` table.
_WRITE_COLUMNS = "task_id, task_path, idx, channel, type, value"

#: Per saver: `_WRITE_COLUMNS`, without `task_path` on a table from before 3.1.2 (which added it).
_write_columns: WeakKeyDictionary[AsyncSqliteSaver, str] = WeakKeyDictionary()

#: Checkpoints written by a run: LangGraph copies `config["metadata"]` (our `run_id`) into them.
_RUN_CHECKPOINTS = (
    "SELECT checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id = ? "
    "AND json_extract(CAST(metadata AS TEXT), '$.run_id') = ?"
)


class FencedSqliteSaver(FencedWrites, AsyncSqliteSaver):
    """`AsyncSqliteSaver` whose writes run inside the running attempt's guard."""


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
        async with aiosqlite.connect(path) as conn:  # as LangGraph's `from_conn_string` opens it
            saver = FencedSqliteSaver(conn)
            await saver.setup()  # also turns WAL on
            await tune_sqlite(conn)
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
        async with self._transaction() as cur:
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
            writes = {("", checkpoint_id): await self._writes(cur, thread_id, "", checkpoint_id)}
            task_ids = {str(w[0]) for w in writes["", checkpoint_id]}
            if task_ids:  # a resume: the subgraphs it re-enters
                await cur.execute(
                    "SELECT checkpoint_ns, MAX(checkpoint_id) FROM checkpoints "
                    "WHERE thread_id = ? AND checkpoint_ns <> '' GROUP BY checkpoint_ns",
                    (thread_id,),
                )
                heads = {str(ns): str(head) for ns, head in await cur.fetchall()}
                for ns in resumed_namespaces(heads, task_ids):
                    writes[ns, heads[ns]] = await self._writes(cur, thread_id, ns, heads[ns])
        return Savepoint(thread_id, checkpoint_id, writes)

    async def _writes(self, cur: aiosqlite.Cursor, thread_id: str, ns: str, checkpoint_id: str) -> list[Any]:
        await cur.execute(
            f"SELECT {self.columns} FROM writes "
            "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            (thread_id, ns, checkpoint_id),
        )
        return [tuple(r) for r in await cur.fetchall()]

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
