"""The inline fast path of the SQLite group commit (`runplane.db.sqlite_inline`) on real files: an
idle writer runs a caller's transaction on the event loop's thread, with the group commit's
semantics; it never holds the loop while another connection has the write lock, never runs while
another user's statement may still run on the connection's thread, keeps long statements and WAL
checkpoints off the loop, and still gathers concurrent callers into one hop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runplane.core.errors import Conflict
from runplane.db import sqlite_inline
from runplane.stores.sqlite.store import SqliteStore
from tests.integration.test_sqlite_group_commit import committed


def insert(name: str, blob: bytes = b"") -> Any:
    return lambda conn: conn.execute("INSERT INTO items (name, blob) VALUES (?, ?)", (name, blob)).close()


def thread_of(conn: sqlite3.Connection) -> int:
    return threading.get_ident()


def insert_and_tell(name: str) -> Any:
    """Insert `name`; answers the thread the body ran on."""

    def body(conn: sqlite3.Connection) -> int:
        insert(name)(conn)
        return thread_of(conn)

    return body


def wal_bytes(path: str) -> int:
    return Path(path + "-wal").stat().st_size


async def open_store(path: str, busy_timeout_ms: int) -> SqliteStore:
    store = SqliteStore(path, busy_timeout_ms=busy_timeout_ms)
    await store.open()
    # The first batch on a connection hops (it prepares the connection); the next ones may not.
    await store._transact(lambda conn: conn.execute("CREATE TABLE items (name TEXT PRIMARY KEY, blob BLOB)"))
    return store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = await open_store(str(tmp_path / "runplane.db"), busy_timeout_ms=200)
    try:
        yield opened
    finally:
        await opened.close()


async def test_an_idle_writer_runs_transactions_and_reads_on_the_loops_thread(store: SqliteStore) -> None:
    writer = store._writer
    inline = writer.inline
    loop_thread = threading.get_ident()

    assert await store._transact(insert_and_tell("one")) == loop_thread
    assert committed(store.path) == {"one"}  # answered after its COMMIT, as in a hop
    assert await store._read(thread_of) == loop_thread
    assert writer.inline - inline == 2


async def test_a_write_meeting_another_connections_lock_leaves_the_loop_free(tmp_path: Path) -> None:
    path = str(tmp_path / "runplane.db")
    # A busy timeout far longer than the holder waits for the loop: an inline BEGIN that waited it
    # would hold the loop until the holder gave up.
    store = await open_store(path, busy_timeout_ms=60_000)
    try:
        await store._transact(insert("before"))
        holding, loop_ran = threading.Event(), threading.Event()
        saw_the_loop_run: list[bool] = []

        def hold_the_write_lock() -> None:
            other = sqlite3.connect(path, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # another process's long transaction
                holding.set()
                saw_the_loop_run.append(loop_ran.wait(timeout=20))
                other.execute("ROLLBACK")
            finally:
                other.close()

        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        await asyncio.to_thread(holding.wait)
        inline = store._writer.inline
        write = asyncio.create_task(store._transact(insert("during")))
        for _ in range(5):  # the write tries inline, meets the lock, and waits in the hop
            await asyncio.sleep(0)
        assert not write.done()
        loop_ran.set()  # the loop ran while the write waited for the lock
        await write  # and it lands once the lock is released
        await asyncio.to_thread(holder.join)
        assert saw_the_loop_run == [True]
        assert committed(path) == {"before", "during"}
        assert store._writer.inline == inline  # it was committed by the hop
    finally:
        await store.close()


async def test_a_statement_left_on_the_connections_thread_sends_the_next_batch_behind_it(
    store: SqliteStore,
) -> None:
    release, started = threading.Event(), threading.Event()

    def block() -> int:
        started.set()
        release.wait(timeout=20)
        return 1

    async with store._session() as db:
        await db.create_function("block", 0, block)

    async def read_then_be_cancelled() -> None:
        async with store._session() as db:
            await db.execute_fetchall("SELECT block()")

    reader = asyncio.create_task(read_then_be_cancelled())
    await asyncio.to_thread(started.wait)
    reader.cancel()  # the lock is released; its statement still runs on the connection's thread
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    assert not store._lock.locked()

    write = asyncio.create_task(store._transact(thread_of))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not write.done()  # queued behind the statement, not run beside it on the loop
    release.set()
    assert await write != threading.get_ident()
    assert await store._transact(thread_of) == threading.get_ident()  # idle again: inline


async def test_a_member_failing_inline_is_rolled_back_alone(store: SqliteStore) -> None:
    writer = store._writer
    inline, batches = writer.inline, writer.batches

    def insert_then_refuse(conn: sqlite3.Connection) -> None:
        insert("refused")(conn)
        raise Conflict("refused after writing")

    with pytest.raises(Conflict):
        await store._transact(insert_then_refuse)
    # Three callers in one iteration of the loop: the first inline at once, the two others
    # gathered into one batch, still inline (a small one), the failing member between them.
    tasks = [
        asyncio.create_task(store._transact(body)) for body in (insert("a"), insert_then_refuse, insert("b"))
    ]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], Conflict)
    assert committed(store.path) == {"a", "b"}
    assert writer.inline - inline == 3 and writer.batches - batches == 3
    assert await store._transact(insert("after")) is None  # the connection was left clean
    assert committed(store.path) == {"a", "b", "after"}


async def test_concurrent_callers_are_still_gathered_into_one_hop(store: SqliteStore) -> None:
    writer = store._writer
    inline, batches = writer.inline, writer.batches
    names = [f"item-{i}" for i in range(64)]
    threads = await asyncio.gather(*(store._transact(insert_and_tell(name)) for name in names))
    assert committed(store.path) == set(names)
    # The first caller of the iteration went inline; the 63 others were committed together, off
    # the loop.
    assert writer.batches - batches == 2 and writer.inline - inline == 1
    assert sum(thread != threading.get_ident() for thread in threads) == 63


async def test_a_long_statement_is_moved_off_the_loop(store: SqliteStore) -> None:
    def count_far(conn: sqlite3.Connection) -> tuple[int, int]:
        sql = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 500000) "
            "SELECT count(*) FROM c"
        )
        return conn.execute(sql).fetchone()[0], threading.get_ident()

    count, thread = await store._read(count_far)
    assert count == 500_000
    assert thread != threading.get_ident()  # interrupted inline, run again in the hop
    assert await store._read(thread_of) == threading.get_ident()


async def test_inline_commits_are_checkpointed_off_the_loop(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointed_on: list[int] = []
    checkpoint = sqlite_inline.checkpoint

    def recorded(conn: sqlite3.Connection) -> int | None:
        checkpointed_on.append(threading.get_ident())
        return checkpoint(conn)

    monkeypatch.setattr(sqlite_inline, "checkpoint", recorded)
    writer = store._writer
    inline = writer.inline
    writes = 8 * sqlite_inline.CHECKPOINT_EVERY
    for i in range(writes):  # two pages each at least (a row and its overflow page)
        await store._transact(insert(f"item-{i}", bytes(4096)))
    assert writer.inline - inline > writes // 2
    assert checkpointed_on and threading.get_ident() not in checkpointed_on
    # Never one inside a COMMIT, which may run on the loop: only the writer's, in a hop.
    assert await store._read(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
    # Each checkpoint let the WAL start over: it never held more than a fraction of the writes
    # (without checkpoints it would hold every page written, twice the bound).
    assert wal_bytes(store.path) < writes * 4096


def test_the_checkpoint_interval_keeps_the_wal_near_sqlites_default() -> None:
    every = sqlite_inline.CHECKPOINT_EVERY
    low, high = sqlite_inline.CHECKPOINT_EVERY_RANGE
    assert sqlite_inline.next_checkpoint(every, sqlite_inline.WAL_PAGES) == every
    assert sqlite_inline.next_checkpoint(every, 2 * sqlite_inline.WAL_PAGES) == every // 2  # big rows
    assert sqlite_inline.next_checkpoint(every, 10**7) == low
    assert sqlite_inline.next_checkpoint(every, 1) == high
    assert sqlite_inline.next_checkpoint(every, None) == high  # not in WAL mode, or it failed
