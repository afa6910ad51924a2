"""Group commit of an attempt's fenced writes (`stores.postgres._attempt_commits`), against a
recording commit function; the real database is in `tests/integration/test_postgres_fence.py`."""

from __future__ import annotations

import asyncio

import pytest

from runplane.core.errors import LeaseLost
from runplane.stores.postgres._attempt_commits import AttemptCommits, Statements


class Database:
    """Records each commit's statements; each commit waits for one `allow()`."""

    def __init__(self) -> None:
        self.commits: list[tuple[str, int, list[str]]] = []
        self.started = asyncio.Event()
        self._permits = asyncio.Semaphore(0)
        self.fail: BaseException | None = None

    def allow(self, commits: int = 1) -> None:
        for _ in range(commits):
            self._permits.release()

    async def commit(self, run_id: str, attempt: int, statements: Statements) -> None:
        self.started.set()
        await self._permits.acquire()
        if self.fail is not None:
            raise self.fail
        self.commits.append((run_id, attempt, [str(query) for query, _ in statements]))


async def _first_in_flight(commits: AttemptCommits, db: Database, run_id: str = "r1") -> asyncio.Task[None]:
    first = asyncio.create_task(commits.commit(run_id, 1, [("w0", None)]))
    await db.started.wait()
    return first


async def test_writes_arriving_during_a_commit_go_together_in_the_next_in_order() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    first = await _first_in_flight(commits, db)
    later = [asyncio.create_task(commits.commit("r1", 1, [(f"w{i}", None)])) for i in (1, 2, 3)]
    await asyncio.sleep(0)  # the later writes are waiting for the first commit
    assert not any(task.done() for task in later)
    db.allow(2)
    await asyncio.gather(first, *later)
    assert db.commits == [("r1", 1, ["w0"]), ("r1", 1, ["w1", "w2", "w3"])]
    assert commits._lanes == {}


async def test_attempts_never_share_a_batch() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    first = await _first_in_flight(commits, db)
    other_attempt = asyncio.create_task(commits.commit("r1", 2, [("newer", None)]))
    other_run = asyncio.create_task(commits.commit("r2", 1, [("other", None)]))
    db.allow(3)
    await asyncio.gather(first, other_attempt, other_run)
    assert sorted(db.commits) == [("r1", 1, ["w0"]), ("r1", 2, ["newer"]), ("r2", 1, ["other"])]


async def test_a_refused_batch_refuses_every_write_in_it() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    first = await _first_in_flight(commits, db)
    later = [asyncio.create_task(commits.commit("r1", 1, [(f"w{i}", None)])) for i in (1, 2)]
    await asyncio.sleep(0)
    db.fail = LeaseLost("run r1 attempt 1 lost its lease")
    db.allow(3)
    results = await asyncio.gather(first, *later, return_exceptions=True)
    assert [type(result) for result in results] == [LeaseLost] * 3
    assert db.commits == []


async def test_a_cancelled_leader_leaves_its_followers_writes_to_be_committed() -> None:
    """A leader's task is cancelled while its batch, with other tasks' writes in it, is in flight:
    those writes are committed again by one of their own tasks, not lost with the batch."""
    db = Database()
    commits = AttemptCommits(db.commit)
    first = await _first_in_flight(commits, db)
    followers = [asyncio.create_task(commits.commit("r1", 1, [(f"w{i}", None)])) for i in (1, 2)]
    await asyncio.sleep(0)
    db.started.clear()
    db.allow()
    await first  # w0 committed; the task of w1 now leads the batch of w1 and w2
    await db.started.wait()
    followers[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await followers[0]
    db.allow()
    await followers[1]
    assert db.commits == [("r1", 1, ["w0"]), ("r1", 1, ["w2"])]
    assert commits._lanes == {}
