"""A run's checkpoint writes acknowledged before they commit, on PostgreSQL (`durability="async"`).

LangGraph does not wait for a run's checkpoints under its default durability, but it chains them:
each `aput` waits for the previous one. Acknowledged at once (`Store.hold_attempt(early=True)`),
they commit together in fewer transactions, and the worker waits for them where it matters: before
the run ends (the last of them commit in the finish's own transaction), and before a cancel reads
or rolls back the thread. These tests hold the commits back at the store and watch what the worker
does meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from runplane.core.errors import StoreUnavailable
from runplane.core.manager import RunManager
from runplane.core.models import Run
from runplane.events.memory import InMemoryBus
from runplane.runtime import checkpointer as checkpoints
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.postgres import _attempt_commits
from runplane.stores.postgres._attempt_commits import Statements
from runplane.stores.postgres.store import PostgresStore
from runplane.worker import Worker
from tests._services import postgres_database
from tests.integration._worker_support import GATE, GRAPHS

pytestmark = pytest.mark.postgres

STALLED_AFTER = 30.0


@pytest.fixture
def db_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh_gate() -> None:
    GATE["second"] = asyncio.Event()


class HeldCommits:
    """Holds back the store's transactions of checkpoint writes (the finish's too, when writes go
    with it) until `release()`; counts them."""

    def __init__(self, store: PostgresStore) -> None:
        self._commit = store._commit_hold
        store._commit_hold = self._held  # type: ignore[method-assign]
        self.waiting = asyncio.Event()
        self.released = asyncio.Event()
        self.transactions: list[Statements] = []

    async def _held(self, run_id: str, attempt: int, statements: Statements, **kwargs: Any) -> Any:
        self.transactions.append(statements)
        self.waiting.set()
        await self.released.wait()
        return await self._commit(run_id, attempt, statements, **kwargs)

    def release(self) -> None:
        self.released.set()


@asynccontextmanager
async def worker_on(db_url: str) -> AsyncIterator[tuple[Worker, PostgresStore]]:
    store = PostgresStore.from_url(db_url)
    async with store, open_checkpointer(db_url) as saver:
        worker = Worker(RunManager(store, InMemoryBus()), LangGraphRuntime(GRAPHS, saver), shutdown_grace=0.5)
        await worker.start()
        try:
            yield worker, store
        finally:
            await worker.stop()


async def _create(worker: Worker, graph_id: str, **kwargs: Any) -> Run:
    manager = worker.manager
    thread = await manager.create_thread()
    return await manager.create_run(thread.thread_id, graph_id, kwargs={"graph_id": graph_id, **kwargs})


async def _checkpoints_of(db_url: str, run_id: str) -> int:
    """The run's checkpoints as another session sees them (committed ones)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM checkpoints WHERE metadata ->> 'run_id' = %s", (run_id,)
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_run_ends_only_once_its_writes_acknowledged_early_have_landed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 3600)  # however slow the machine
    async with worker_on(db_url) as (worker, store):
        held = HeldCommits(store)
        barrier_reached = asyncio.Event()
        writes_committed = worker.manager.writes_committed

        async def at_the_barrier(run: Run, **kwargs: Any) -> BaseException | None:
            barrier_reached.set()
            return await writes_committed(run, **kwargs)

        worker.manager.writes_committed = at_the_barrier  # type: ignore[method-assign]
        run = await _create(worker, "echo", input={"messages": ["hi"], "n": 7})
        await barrier_reached.wait()  # the graph ran to its end: no write kept it waiting
        await held.waiting.wait()  # its writes' transaction is held back
        assert (await worker.manager.get_run(run.run_id)).status == "running"
        assert await _checkpoints_of(db_url, run.run_id) == 0
        held.release()
        final = await worker.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
        assert final is not None and final.status == "success"
        # What the run ended with is on the database: its checkpoints, and the thread's values.
        assert await _checkpoints_of(db_url, run.run_id) >= 2
        thread = await worker.manager.get_thread(run.thread_id)
        assert thread.values == {"messages": ["hi"], "n": 7}
        # A run shorter than the writes' linger: its first writes began at once, the others
        # committed with its end, in the finish's transaction.
        assert len(held.transactions) == 2
        assert any("runplane_finish" in str(query) for query, _ in held.transactions[1])


async def test_a_rollback_waits_for_the_writes_acknowledged_early(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the wait, the rollback would delete what had committed, and the commits held back
    would land after it, while the run still holds its lease: the thread would keep checkpoints of
    a run rolled back."""
    async with worker_on(db_url) as (worker, store):
        held = HeldCommits(store)
        rollback = checkpoints.rollback
        writes_committed = worker.manager.writes_committed

        async def releasing(run: Run, **kwargs: Any) -> BaseException | None:
            held.release()  # the worker waits for the writes: let them land
            return await writes_committed(run, **kwargs)

        async def then_release(*args: Any, **kwargs: Any) -> None:
            await rollback(*args, **kwargs)
            held.release()  # had it not waited, the held commits would land now
            await store.writes_committed(run.run_id, 1)

        worker.manager.writes_committed = releasing  # type: ignore[method-assign]
        monkeypatch.setattr(checkpoints, "rollback", then_release)
        run = await _create(worker, "gated", input={"log": ["in"]}, stream_mode=["custom"])
        async for event in await worker.manager.stream_run(run.run_id):
            if event.event == "custom":
                break  # its second step runs; the first's checkpoint is held back
        await held.waiting.wait()
        await worker.manager.cancel_run(run.run_id, action="rollback")
        assert await worker.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER) is None  # gone
        assert await _checkpoints_of(db_url, run.run_id) == 0


async def test_the_final_state_is_read_while_the_writes_commit_and_stands_only_once_they_have(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final state comes from the run's own puts (`_own_puts`), so it is read while the writes
    it comes from commit. Their commit then fails (an outage): the run does not end with that state;
    the attempt rides the fault out, continues from what committed, and ends with the same values.
    (Writes begin to commit at once here, as a long run's do, rather than linger to its end.)"""
    from langgraph.pregel import Pregel

    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 0)
    async with worker_on(db_url) as (worker, store):
        order: list[str] = []
        commits = store._attempt_commits
        commit = commits._commit_checked
        barrier_reached = asyncio.Event()

        async def failing_once(run_id: str, attempt: int, statements: Statements) -> None:
            if "failed" not in order:
                await barrier_reached.wait()  # the run's end waits for this commit
                order.append("failed")
                raise StoreUnavailable("the database went away")
            await commit(run_id, attempt, statements)

        commits._commit_checked = failing_once
        writes_committed = worker.manager.writes_committed

        async def at_the_barrier(run: Run, **kwargs: Any) -> BaseException | None:
            order.append("barrier")
            barrier_reached.set()
            return await writes_committed(run, **kwargs)

        worker.manager.writes_committed = at_the_barrier  # type: ignore[method-assign]
        aget_state = Pregel.aget_state

        async def reading(self: Any, *args: Any, **kwargs: Any) -> Any:
            order.append("read")
            return await aget_state(self, *args, **kwargs)

        monkeypatch.setattr(Pregel, "aget_state", reading)
        run = await _create(worker, "echo", input={"messages": ["hi"], "n": 7})
        final = await worker.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
        assert order[:3] == ["read", "barrier", "failed"]
        assert final is not None and final.status == "success" and final.attempt == 1
        thread = await worker.manager.get_thread(run.thread_id)
        assert thread.values == {"messages": ["hi"], "n": 7}
        assert await _checkpoints_of(db_url, run.run_id) >= 2


async def test_a_finish_that_fails_with_the_last_writes_commits_them_when_tried_again(db_url: str) -> None:
    """The finish's transaction, which carries the run's last writes, fails (an outage): nothing of
    it committed. The worker tries the finish again once the database answers, with the same
    writes: the run ends once, in its first attempt, with its checkpoints and its values."""
    async with worker_on(db_url) as (worker, store):
        commit = store._commit_hold
        failures: list[Statements] = []

        async def failing_once(run_id: str, attempt: int, statements: Statements, **kwargs: Any) -> Any:
            if not failures and any("runplane_finish" in str(query) for query, _ in statements):
                failures.append(statements)
                raise StoreUnavailable("the database went away")
            return await commit(run_id, attempt, statements, **kwargs)

        store._commit_hold = failing_once  # type: ignore[method-assign]
        run = await _create(worker, "echo", input={"messages": ["hi"], "n": 7})
        final = await worker.manager.wait_for_run(run.run_id, timeout=STALLED_AFTER)
        assert final is not None and final.status == "success" and final.attempt == 1
        assert await _checkpoints_of(db_url, run.run_id) >= 2
        thread = await worker.manager.get_thread(run.thread_id)
        assert thread.values == {"messages": ["hi"], "n": 7}
