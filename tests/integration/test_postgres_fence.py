"""The checkpoint fence on PostgreSQL: LangGraph's saver writes inside the attempt's hold, in the
hold's own transaction, so a checkpoint commits with the lease check or not at all.

Two `PostgresStore` instances (separate pools) play a stalled worker and the process that recovers
its run; the saver is the one `open_checkpointer` opens on the same database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

from runplane.core.errors import LeaseLost
from runplane.core.models import NewRun, NewThread, Outcome, Run
from runplane.runtime.checkpointer import Guard, fence_writes, open_checkpointer
from runplane.runtime.checkpointer.postgres import FencedPostgresSaver
from runplane.stores.postgres import _attempt_commits
from runplane.stores.postgres._attempt_commits import Statements
from runplane.stores.postgres.store import PostgresStore
from runplane.testing import FakeClock
from tests._services import postgres_database

pytestmark = pytest.mark.postgres

CONFIG: RunnableConfig = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}


@pytest.fixture
def db_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stores(db_url: str, clock: FakeClock) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """The worker's store and another process's, on one database."""
    worker = PostgresStore.from_url(db_url, clock=clock, max_size=4)
    other = PostgresStore.from_url(db_url, clock=clock, max_size=4)
    async with worker, other:
        yield worker, other


@pytest.fixture
async def saver(db_url: str) -> AsyncIterator[FencedPostgresSaver]:
    async with open_checkpointer(db_url) as opened:
        assert isinstance(opened, FencedPostgresSaver)
        yield opened


async def _claimed(store: PostgresStore) -> Run:
    await store.create_thread(NewThread(thread_id="t1"))
    await store.create_run(NewRun("r1", "t1", "agent"))
    claimed = await store.claim_run("w1", 30)
    assert claimed is not None
    return claimed


async def _recovered_from(worker: PostgresStore, recoverer: PostgresStore, clock: FakeClock) -> int:
    """Run r1 claimed by `worker`, then recovered by another process once its lease expired: the
    worker's attempt, now stale."""
    claimed = await _claimed(worker)
    clock.advance(31)
    await recoverer.recover_run("r1", claimed.attempt, max_attempts=3)
    return claimed.attempt


async def _put_fenced(saver: FencedPostgresSaver, guard: Guard, write: str = "checkpoint") -> None:
    """One write of an attempt whose guard is `guard`, as the attempt's task makes it: a checkpoint,
    or pending writes (several rows in one `executemany`)."""

    async def attempt() -> None:
        fence_writes(guard)
        if write == "checkpoint":
            await saver.aput(CONFIG, empty_checkpoint(), {"source": "loop", "step": 1}, {})
        else:
            at: RunnableConfig = {"configurable": {**CONFIG["configurable"], "checkpoint_id": "c1"}}
            await saver.aput_writes(at, [("a", 1), ("b", 2), ("c", 3)], task_id="task")

    await asyncio.create_task(attempt())


async def _latest(db_url: str) -> int:
    """Checkpoints and pending writes of thread t1, as another session sees them (committed ones)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints WHERE thread_id = 't1') "
            "+ (SELECT count(*) FROM checkpoint_writes WHERE thread_id = 't1')"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_checkpoint_commits_with_the_lease_check(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str
) -> None:
    """Written in the hold's transaction: nobody sees it before the hold commits, and it is the
    thread's checkpoint once the hold has."""
    worker, _ = stores
    claimed = await _claimed(worker)
    seen_inside: list[int] = []

    @asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        async with worker.hold_attempt("r1", claimed.attempt, 30):
            yield  # the saver writes here
            seen_inside.append(await _latest(db_url))

    await _put_fenced(saver, guard)
    assert seen_inside == [0]
    assert await _latest(db_url) == 1
    assert await saver.aget_tuple(CONFIG) is not None


@pytest.mark.parametrize("write", ["checkpoint", "pending writes"])
async def test_a_write_of_an_attempt_recovered_before_its_commit_does_not_land(
    stores: tuple[PostgresStore, PostgresStore],
    saver: FencedPostgresSaver,
    db_url: str,
    clock: FakeClock,
    write: str,
) -> None:
    """The worker stalls after LangGraph handed its write to the fence, past its lease: another
    process recovers the run (a newer attempt may write the thread). The stale write must not
    become the thread's state: the fence fails with LeaseLost, and the write, in the transaction
    that checked the lease, is gone with it."""
    worker, recoverer = stores
    claimed = await _claimed(worker)
    clock.advance(31)  # the lease has expired
    recovered: list[Run] = []

    @asynccontextmanager
    async def stalling_guard() -> AsyncIterator[None]:
        async with worker.hold_attempt("r1", claimed.attempt, max_seconds=0.2):
            yield  # the saver writes here...
            # ...then the worker stalls (at most `max_seconds` if its hold holds a session).
            recovered.append(await recoverer.recover_run("r1", claimed.attempt, max_attempts=3))

    with pytest.raises(LeaseLost):
        await _put_fenced(saver, stalling_guard, write)
    assert [(run.status, run.attempt) for run in recovered] == [("pending", claimed.attempt)]
    assert await _latest(db_url) == 0


async def test_a_write_after_the_attempt_was_recovered_fails_with_lease_lost(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str, clock: FakeClock
) -> None:
    """The worker stalls inside the fence before its write, and the run is recovered meanwhile:
    the write fails with LeaseLost (not a driver error), and nothing lands."""
    worker, recoverer = stores
    claimed = await _claimed(worker)
    clock.advance(31)

    @asynccontextmanager
    async def stalling_guard() -> AsyncIterator[None]:
        async with worker.hold_attempt("r1", claimed.attempt, max_seconds=0.2):
            await recoverer.recover_run("r1", claimed.attempt, max_attempts=3)
            yield  # the saver writes here

    with pytest.raises(LeaseLost):
        await _put_fenced(saver, stalling_guard)
    assert await _latest(db_url) == 0


@pytest.mark.parametrize("write", ["checkpoint", "pending writes"])
async def test_a_stalled_writer_in_a_hold_that_checked_first_loses_it_and_writes_nothing(
    stores: tuple[PostgresStore, PostgresStore],
    saver: FencedPostgresSaver,
    db_url: str,
    clock: FakeClock,
    write: str,
) -> None:
    """A hold entered by anything else than the saver's own fence checks the lease first and keeps
    the run share-locked in an open transaction; a saver writing inside joins that transaction.
    The writer then stalls: PostgreSQL ends the idle session after `max_seconds`, which releases
    the run to the recoverer, blocked on the lock until then; the hold fails and nothing lands
    (the write was in its transaction). Pending writes are several rows: the session must still
    be idle in its transaction after them (a pipeline would leave its idle limit unarmed)."""
    worker, recoverer = stores
    claimed = await _claimed(worker)
    clock.advance(31)
    recovered: list[Run] = []

    async def attempt() -> None:
        async with worker.hold_attempt("r1", claimed.attempt, max_seconds=0.2):
            if write == "checkpoint":  # LangGraph's own methods: not the fence's
                await AsyncPostgresSaver.aput(saver, CONFIG, empty_checkpoint(), {"step": 1}, {})
            else:
                at: RunnableConfig = {"configurable": {**CONFIG["configurable"], "checkpoint_id": "c1"}}
                await AsyncPostgresSaver.aput_writes(saver, at, [("a", 1), ("b", 2)], task_id="task")
            recovered.append(await recoverer.recover_run("r1", claimed.attempt, max_attempts=3))

    with pytest.raises(LeaseLost, match="lost its hold"):
        await asyncio.create_task(attempt())
    assert [(run.status, run.attempt) for run in recovered] == [("pending", claimed.attempt)]
    assert await _latest(db_url) == 0


async def test_writes_of_one_attempt_in_flight_together_commit_together(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str
) -> None:
    """LangGraph writes a step's pending writes and the next checkpoint from background tasks, so
    they overlap: those handed over while one of the attempt's commits is in flight share the next
    transaction (one lease check, one COMMIT), and every one of them is committed when its call
    returns. Observed through the transaction ids of the rows."""
    worker, _ = stores
    claimed = await _claimed(worker)

    async def write(task_id: str) -> None:
        await _write_in_hold(worker, saver, claimed.attempt, task_id)
        assert await _task_committed(db_url, task_id)  # durable once the call returned

    await asyncio.gather(*(asyncio.create_task(write(f"task{i}")) for i in range(6)))
    # The first alone; the five handed over meanwhile, together.
    assert await _writes_and_transactions(db_url) == (6, 2)


async def test_a_stale_attempts_batched_writes_all_fail_and_none_lands(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str, clock: FakeClock
) -> None:
    worker, recoverer = stores
    stale = await _recovered_from(worker, recoverer, clock)
    writes = (_write_in_hold(worker, saver, stale, f"task{i}") for i in range(4))
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [type(result) for result in results] == [LeaseLost] * 4
    assert await _latest(db_url) == 0


async def _write_in_hold(
    worker: PostgresStore, saver: FencedPostgresSaver, attempt: int, task_id: str, *, early: bool = False
) -> None:
    """One pending write of run r1's `attempt`, in a task of its own, fenced by the worker's hold
    (`early`: acknowledged before it commits)."""

    @asynccontextmanager
    async def guard() -> AsyncIterator[None]:
        async with worker.hold_attempt("r1", attempt, 30, early=early):
            yield

    async def write() -> None:
        fence_writes(guard)
        at: RunnableConfig = {"configurable": {**CONFIG["configurable"], "checkpoint_id": "c1"}}
        await saver.aput_writes(at, [("a", task_id)], task_id=task_id)

    await asyncio.create_task(write())


async def _writes_and_transactions(db_url: str) -> tuple[int, int]:
    """Thread t1's committed pending writes, and how many transactions wrote them (their `xmin`)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM checkpoint_writes WHERE thread_id = 't1'"
        )
        rows, transactions = await cursor.fetchone() or (0, 0)
    return int(rows), int(transactions)


async def _task_committed(db_url: str, task_id: str) -> bool:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT 1 FROM checkpoint_writes WHERE task_id = %s", (task_id,))
        return await cursor.fetchone() is not None


# -- acknowledged early (`durability="async"`) ----------------------------------------------------


async def test_early_writes_made_one_after_another_share_transactions(
    stores: tuple[PostgresStore, PostgresStore],
    saver: FencedPostgresSaver,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made one after another, as LangGraph chains a run's checkpoints, awaited writes commit one
    transaction each; acknowledged early, the writer goes on at once and the ones handed over
    during a commit share the next, even without lingering. `writes_committed` says when all have
    landed."""
    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 0)
    worker, _ = stores
    commits = worker._attempt_commits
    commit = commits._commit_checked
    first_in_flight, all_handed_over = asyncio.Event(), asyncio.Event()

    async def holding_the_first(run_id: str, attempt: int, statements: Statements) -> None:
        if not first_in_flight.is_set():
            first_in_flight.set()
            await all_handed_over.wait()
        await commit(run_id, attempt, statements)

    commits._commit_checked = holding_the_first
    claimed = await _claimed(worker)
    await _write_in_hold(worker, saver, claimed.attempt, "task0", early=True)
    await first_in_flight.wait()
    for i in range(1, 6):
        await _write_in_hold(worker, saver, claimed.attempt, f"task{i}", early=True)
    all_handed_over.set()
    assert await worker.writes_committed("r1", claimed.attempt) is None
    # The first alone; the five handed over meanwhile, together.
    assert await _writes_and_transactions(db_url) == (6, 2)


async def test_early_writes_after_the_first_batch_linger_into_one_transaction(
    stores: tuple[PostgresStore, PostgresStore],
    saver: FencedPostgresSaver,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attempt's first write begins to commit at once; once it has, the writes made one after
    another linger (`LINGER_SECONDS`) and share one transaction. Without the linger, the first of
    them would begin alone, the others sharing the next."""
    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 3600)  # however slow the machine
    worker, _ = stores
    claimed = await _claimed(worker)
    await _write_in_hold(worker, saver, claimed.attempt, "task0", early=True)
    await _first_batch_committed(worker, claimed.attempt)
    for i in range(1, 6):
        await _write_in_hold(worker, saver, claimed.attempt, f"task{i}", early=True)
    assert await worker.writes_committed("r1", claimed.attempt) is None
    assert await _writes_and_transactions(db_url) == (6, 2)


async def _first_batch_committed(worker: PostgresStore, attempt: int) -> None:
    """Wait for the batches of run r1's `attempt` in flight, without draining (a drain ends the
    attempt's first turn: its next write would begin at once again)."""
    commits = worker._attempt_commits
    early = commits._early[("r1", attempt)]
    if early.timer is not None:  # it would begin at the loop's next turn: now
        commits._begin_lingering("r1", attempt, early)
    await asyncio.wait(set(early.commits))
    assert early.failed is None


async def _xmin_of_run(db_url: str) -> str:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT xmin::text FROM runs WHERE run_id = 'r1'")
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


async def test_the_writes_left_to_the_finish_commit_in_its_transaction(
    stores: tuple[PostgresStore, PostgresStore],
    saver: FencedPostgresSaver,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the run's end, the writes not yet begun wait for the finish (`for_finish`): nothing of
    them is visible before it, and they commit in the finish's own transaction."""
    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 3600)  # however slow the machine
    worker, _ = stores
    claimed = await _claimed(worker)
    await _write_in_hold(worker, saver, claimed.attempt, "task0", early=True)
    await _first_batch_committed(worker, claimed.attempt)
    for i in (1, 2):
        await _write_in_hold(worker, saver, claimed.attempt, f"task{i}", early=True)
    assert await worker.writes_committed("r1", claimed.attempt, for_finish=True) is None
    assert await _latest(db_url) == 1  # the first write only
    finished = await worker.finish_and_look("r1", claimed.attempt, Outcome("success", "idle"))
    assert finished.run.status == "success"
    assert await _writes_and_transactions(db_url) == (3, 2)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT DISTINCT xmin::text FROM checkpoint_writes WHERE thread_id = 't1' AND task_id <> 'task0'"
        )
        (writes_xmin,) = await cursor.fetchone() or ("",)
    assert writes_xmin == await _xmin_of_run(db_url)


async def test_a_stale_attempts_writes_left_to_its_finish_do_not_land(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str, clock: FakeClock
) -> None:
    """The attempt's first write commits; its lease then expires and another process recovers the
    run. The attempt's last write, left to its finish, does not land: the finish is refused whole."""
    worker, recoverer = stores
    claimed = await _claimed(worker)
    await _write_in_hold(worker, saver, claimed.attempt, "task0", early=True)
    await _first_batch_committed(worker, claimed.attempt)
    clock.advance(31)
    await recoverer.recover_run("r1", claimed.attempt, max_attempts=3)
    await _write_in_hold(worker, saver, claimed.attempt, "task1", early=True)
    assert await worker.writes_committed("r1", claimed.attempt, for_finish=True) is None
    with pytest.raises(LeaseLost):
        await worker.finish_and_look("r1", claimed.attempt, Outcome("success", "idle"))
    assert await _latest(db_url) == 1  # the first write only


async def test_a_stale_attempts_early_writes_do_not_land_and_its_drain_says_why(
    stores: tuple[PostgresStore, PostgresStore], saver: FencedPostgresSaver, db_url: str, clock: FakeClock
) -> None:
    worker, recoverer = stores
    stale = await _recovered_from(worker, recoverer, clock)
    await _write_in_hold(worker, saver, stale, "task0", early=True)  # acknowledged: refused later
    assert isinstance(await worker.writes_committed("r1", stale), LeaseLost)
    assert await _latest(db_url) == 0
