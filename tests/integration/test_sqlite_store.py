"""The SQLite store against real files: migrations, durability under kill -9, several connections
sharing one file, restart. Per-method semantics are the conformance suite's job."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from runplane.core.errors import Conflict, StoreUnavailable, ThreadBusy
from runplane.core.models import MultitaskStrategy, NewRun, NewThread, Outcome, Run, RunFilter
from runplane.stores import open_store
from runplane.stores.sqlite._connection import MIGRATIONS, translate_errors
from runplane.stores.sqlite.store import SqliteStore
from runplane.testing import FakeClock


def _schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    db.close()
    return rows


def _versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT version FROM runplane_migrations ORDER BY version").fetchall()
    db.close()
    return [version for (version,) in rows]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runplane.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(str(db_path), clock=clock) as opened:
        yield opened


def _new_run(run_id: str, thread_id: str, multitask_strategy: MultitaskStrategy = "enqueue") -> NewRun:
    return NewRun(run_id, thread_id, "agent", multitask_strategy=multitask_strategy, if_not_exists="create")


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("sqlite:///relative.db", "relative.db"),
        ("sqlite:///./dir/x.db", "./dir/x.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite+aiosqlite:///x.db", "x.db"),
    ],
)
def test_url_maps_to_path(url: str, path: str) -> None:
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    assert store.path == path
    assert store.checkpointer_url == path


async def test_memory_and_relative_urls_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite:///:memory:", "sqlite://:memory:", "sqlite:///relative.db", "sqlite:///sub/dir.db"):
        store = open_store(url, clock=FakeClock())
        await store.open()
        try:
            assert (await store.create_run(_new_run("r", "t"))).run.status == "pending"
        finally:
            await store.close()
    assert (tmp_path / "relative.db").is_file()
    assert (tmp_path / "sub" / "dir.db").is_file()


# -- migrations ---------------------------------------------------------------------------------


async def test_stepwise_migrations_equal_a_fresh_schema(tmp_path: Path, clock: FakeClock) -> None:
    fresh, stepwise = tmp_path / "fresh.db", tmp_path / "stepwise.db"
    async with SqliteStore(str(fresh), clock=clock):
        pass

    store = SqliteStore(str(stepwise), clock=clock)
    await store.open(apply_migrations=False)
    try:
        for migration in MIGRATIONS:
            assert await store.migrate(target=migration.version) == [migration.version]
    finally:
        await store.close()

    assert _schema(stepwise) == _schema(fresh)
    assert _versions(stepwise) == _versions(fresh) == [m.version for m in MIGRATIONS]


async def test_migrate_twice_is_a_no_op(db_path: Path, store: SqliteStore) -> None:
    before = _schema(db_path)
    assert await store.migrate() == []
    assert await store.migrate() == []
    assert _schema(db_path) == before
    assert _versions(db_path) == [m.version for m in MIGRATIONS]


async def test_concurrent_first_opens_migrate_once(tmp_path: Path, clock: FakeClock) -> None:
    """Connections opening a new file at once race to switch it to WAL (SQLite refuses the losers
    at once, without its busy wait: about 1 round in 10 failed before the retry). Many rounds."""
    for round_ in range(40):
        path = tmp_path / f"round{round_}.db"
        stores = [SqliteStore(str(path), clock=clock) for _ in range(6)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            assert _versions(path) == [m.version for m in MIGRATIONS]
        finally:
            for s in stores:
                await s.close()


# -- durability ---------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from runplane.core.models import NewRun, Outcome
    from runplane.stores.sqlite.store import SqliteStore

    async def main(path):
        store = SqliteStore(path)
        await store.open()
        await store.create_run(NewRun("finished", "t1", "agent", if_not_exists="create"))
        run = await store.claim_run("w", 30)
        await store.finish_run(
            run.run_id, run.attempt, Outcome("success", "idle", thread_values={"answer": 42})
        )
        await store.create_run(NewRun("created", "t2", "agent", if_not_exists="create"))
        print("ack", flush=True)
        time.sleep(60)  # never closes: killed here

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.slow
async def test_acknowledged_writes_survive_kill_9(db_path: Path, clock: FakeClock) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(db_path), stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await child.stdout.readline() == b"ack\n"
    finally:
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL

    async with SqliteStore(str(db_path), clock=clock) as store:
        finished = await store.get_run("finished", "")
        assert finished.status == "success"
        thread = await store.get_thread("t1", "")
        assert (thread.status, thread.values) == ("idle", {"answer": 42})
        assert (await store.get_run("created", "")).status == "pending"
        assert (await store.get_thread("t2", "")).status == "busy"


# -- several connections on one file -----------------------------------------------------------


async def test_reject_admits_exactly_one_across_connections(db_path: Path, clock: FakeClock) -> None:
    async with (
        SqliteStore(str(db_path), clock=clock) as one,
        SqliteStore(str(db_path), clock=clock) as two,
    ):
        await one.create_thread(NewThread(thread_id="t"))

        async def create(i: int) -> Run | None:
            store = one if i % 2 else two
            try:
                return (await store.create_run(_new_run(f"r{i}", "t", "reject"))).run
            except ThreadBusy:
                return None

        results = await asyncio.gather(*(create(i) for i in range(50)))
        admitted = [run for run in results if run is not None]
        assert len(admitted) == 1
        assert [r.run_id for r in await two.list_runs("t", "", RunFilter(limit=100))] == [admitted[0].run_id]


async def test_two_claimers_never_claim_the_same_run(db_path: Path, clock: FakeClock) -> None:
    async with (
        SqliteStore(str(db_path), clock=clock) as one,
        SqliteStore(str(db_path), clock=clock) as two,
    ):
        for i in range(40):
            # Two runs per thread: the second may only start once the first has finished.
            await one.create_run(_new_run(f"r{i}", f"t{i % 20}"))

        async def drain(store: SqliteStore, worker: str) -> list[str]:
            claimed = []
            while (run := await store.claim_run(worker, 30)) is not None:
                claimed.append(run.run_id)
                assert run.attempt == 1
                await store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))
            return claimed

        first, second = await asyncio.gather(drain(one, "w1"), drain(two, "w2"))
        assert not set(first) & set(second)
        assert sorted(first + second) == sorted(f"r{i}" for i in range(40))


async def test_database_refuses_two_running_runs_on_a_thread(db_path: Path, store: SqliteStore) -> None:
    await store.create_run(_new_run("a", "t"))
    await store.create_run(_new_run("b", "t"))
    with sqlite3.connect(db_path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE runs SET status = 'running' WHERE thread_id = 't'")
    db.close()


async def test_a_held_write_lock_is_store_unavailable(db_path: Path, clock: FakeClock) -> None:
    async with SqliteStore(str(db_path), clock=clock, busy_timeout_ms=50) as store:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.create_thread(NewThread(thread_id="t"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        # The failed transaction left the connection clean.
        assert (await store.create_thread(NewThread(thread_id="t"))).thread_id == "t"


def test_integrity_errors_become_core_errors() -> None:
    with pytest.raises(ThreadBusy), translate_errors():
        raise sqlite3.IntegrityError("UNIQUE constraint failed: runs.thread_id")
    with pytest.raises(Conflict), translate_errors():
        raise sqlite3.IntegrityError("UNIQUE constraint failed: runs.run_id")
    with pytest.raises(StoreUnavailable), translate_errors():
        raise sqlite3.OperationalError("database is locked")


# -- restart ------------------------------------------------------------------------------------


async def test_pending_and_running_runs_survive_a_restart(db_path: Path, clock: FakeClock) -> None:
    async with SqliteStore(str(db_path), clock=clock) as before:
        await before.create_run(_new_run("held", "t1"))
        await before.create_run(_new_run("queued", "t2"))
        assert (await before.claim_run("dead-worker", 30)) is not None  # "held" is running

    async with SqliteStore(str(db_path), clock=clock) as after:
        assert await after.expired_runs() == []
        clock.advance(31)  # the dead worker's lease runs out
        queued = await after.claim_run("w", 30)
        assert queued is not None and queued.run_id == "queued"

        [expired] = await after.expired_runs()
        assert (expired.run_id, expired.lease_owner) == ("held", "dead-worker")
        recovered = await after.recover_run("held", expired.attempt, max_attempts=3)
        assert recovered.status == "pending"
        resumed = await after.claim_run("w", 30)
        assert resumed is not None and (resumed.run_id, resumed.attempt) == ("held", 2)


# -- LangGraph's checkpointer shares the file ---------------------------------------------------


async def test_checkpointer_tables_live_beside_ours(db_path: Path, store: SqliteStore) -> None:
    async with AsyncSqliteSaver.from_conn_string(store.checkpointer_url) as saver:
        await saver.setup()
        await store.create_run(_new_run("r", "t"))
    tables = {name for (_, name, _, _) in _schema(db_path)}
    assert {"checkpoints", "writes", "threads", "runs", "runplane_migrations"} <= tables
    assert (await store.get_run("r", "")).status == "pending"
