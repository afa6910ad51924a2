"""The group commit of the SQLite store and checkpointer (`runplane.db.sqlite_writer`) on real
files, through the store's edge: concurrent write transactions share a COMMIT, each caller is
answered only once its writes are committed, one failing member does not take its neighbours down,
and other connections to the file keep their `BEGIN IMMEDIATE` semantics."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runplane.core.errors import Conflict, StoreUnavailable
from runplane.db.sqlite_writer import shared
from runplane.runtime.checkpointer.sqlite import SqliteAdapter
from runplane.stores.sqlite.store import SqliteStore

Body = Callable[[sqlite3.Connection], Any]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(str(tmp_path / "runplane.db"), busy_timeout_ms=200) as opened:
        await opened._transact(lambda conn: conn.execute("CREATE TABLE items (name TEXT PRIMARY KEY)"))
        yield opened


def insert(name: str) -> Body:
    return lambda conn: conn.execute("INSERT INTO items (name) VALUES (?)", (name,)).close()


def committed(path: str) -> set[str]:
    """What another connection reads: only committed rows."""
    other = sqlite3.connect(path)
    try:
        return {name for (name,) in other.execute("SELECT name FROM items")}
    finally:
        other.close()


async def submitted(tasks: list[asyncio.Task[Any]]) -> None:
    """Let `tasks` reach the writer's queue (they queue behind the held connection lock)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_transactions_share_commits_and_all_land(store: SqliteStore) -> None:
    writer = store._writer
    batches, members = writer.batches, writer.members
    names = [f"item-{i}" for i in range(64)]
    await asyncio.gather(*(store._transact(insert(name)) for name in names))
    assert committed(store.path) == set(names)
    assert writer.members - members == 64
    assert writer.batches - batches < 64  # they were committed together, not one by one


async def test_each_caller_is_answered_after_the_commit_holding_its_writes(store: SqliteStore) -> None:
    seen: dict[str, bool] = {}

    async def write_then_look(name: str) -> None:
        await store._transact(insert(name))
        # At once, from another connection: a caller answered before the COMMIT would not see it.
        seen[name] = name in committed(store.path)

    async with store._lock:  # hold the batch back, so that all of them join one
        tasks = [asyncio.create_task(write_then_look(f"item-{i}")) for i in range(16)]
        await submitted(tasks)
    await asyncio.gather(*tasks)
    assert seen == {f"item-{i}": True for i in range(16)}


async def test_a_failing_member_is_rolled_back_alone(store: SqliteStore) -> None:
    def insert_then_refuse(conn: sqlite3.Connection) -> None:
        insert("refused")(conn)
        raise Conflict("refused after writing")

    async with store._lock:  # one batch: the failing member between the others
        tasks = [asyncio.create_task(store._transact(insert(f"before-{i}"))) for i in range(4)]
        tasks.append(asyncio.create_task(store._transact(insert_then_refuse)))
        tasks += [asyncio.create_task(store._transact(insert(f"after-{i}"))) for i in range(4)]
        await submitted(tasks)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[4], Conflict)
    assert [r for i, r in enumerate(results) if i != 4] == [None] * 8
    assert committed(store.path) == {f"before-{i}" for i in range(4)} | {f"after-{i}" for i in range(4)}


async def test_a_member_that_breaks_the_transaction_does_not_sink_the_batch(store: SqliteStore) -> None:
    def end_the_transaction(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # undoes its neighbours' writes too: the batch must run again
        raise Conflict("ended the transaction")

    async with store._lock:
        tasks = [asyncio.create_task(store._transact(insert(f"item-{i}"))) for i in range(3)]
        tasks.append(asyncio.create_task(store._transact(end_the_transaction)))
        tasks += [asyncio.create_task(store._transact(insert(f"item-{i}"))) for i in range(3, 6)]
        await submitted(tasks)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[3], Conflict)
    assert committed(store.path) == {f"item-{i}" for i in range(6)}
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 6


async def test_an_integrity_error_in_a_batch_is_the_callers_alone(store: SqliteStore) -> None:
    await store._transact(insert("taken"))
    async with store._lock:
        tasks = [asyncio.create_task(store._transact(insert(name))) for name in ("a", "taken", "b")]
        await submitted(tasks)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Conflict)  # translated at the store's edge
    assert committed(store.path) == {"a", "b", "taken"}


async def test_a_caller_cancelled_before_its_batch_writes_nothing(store: SqliteStore) -> None:
    async with store._lock:
        tasks = [asyncio.create_task(store._transact(insert(f"item-{i}"))) for i in range(3)]
        await submitted(tasks)
        tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[1], asyncio.CancelledError)
    assert committed(store.path) == {"item-0", "item-2"}


async def test_another_connections_write_lock_is_waited_for_then_refused(store: SqliteStore) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's transaction, longer than the busy timeout
        results = await asyncio.gather(
            *(store._transact(insert(f"item-{i}")) for i in range(3)), return_exceptions=True
        )
        assert all(isinstance(result, StoreUnavailable) for result in results)
        other.execute("ROLLBACK")
    finally:
        other.close()
    await store._transact(insert("after"))  # the writer works on once the lock is free
    assert committed(store.path) == {"after"}


async def test_reads_see_only_committed_writes(store: SqliteStore) -> None:
    async with store._lock:  # a read and a write in one batch: the read runs outside its transaction
        write = asyncio.create_task(store._transact(insert("new")))
        read = asyncio.create_task(
            store._read(lambda conn: {name for (name,) in conn.execute("SELECT name FROM items")})
        )
        await submitted([write, read])
    assert await read == set()
    await write
    assert await store._read(lambda conn: conn.execute("SELECT count(*) FROM items").fetchone()[0]) == 1


async def test_a_closed_store_refuses_queued_transactions(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "runplane.db"))
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store._transact(lambda conn: None)


async def test_the_checkpointer_on_the_stores_file_shares_its_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "runplane.db")
    async with SqliteStore(path) as store:
        assert shared(path) is store._writer
        async with SqliteAdapter.open(path) as saver:
            assert saver.writer is store._writer
        async with SqliteAdapter.open(str(tmp_path / "other.db")) as saver:
            assert saver.writer is not store._writer  # another file: a writer of its own
    assert shared(path) is None
    async with SqliteAdapter.open(path) as saver:  # no store open: its own connection's writer
        assert saver.writer is not None and saver.writer is not store._writer
