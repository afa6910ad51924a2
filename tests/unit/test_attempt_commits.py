"""Group commit of an attempt's fenced writes (`stores.postgres._attempt_commits`), against a
recording commit function; the real database is in `tests/integration/test_postgres_fence.py`."""

from __future__ import annotations

import asyncio

import pytest

from runplane.core.errors import LeaseLost, StoreUnavailable
from runplane.stores.postgres import _attempt_commits
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


async def test_writes_waiting_behind_a_refused_batch_are_refused_with_it() -> None:
    """Committed alone, a later write could leave a checkpoint pointing at values the refused
    batch held: once a batch fails, the writes handed over after it fail too."""
    db = Database()
    commits = AttemptCommits(db.commit)
    first = await _first_in_flight(commits, db)
    behind = asyncio.create_task(commits.commit("r1", 1, [("w1", None)]))
    await asyncio.sleep(0)  # w1 waits for the batch in flight
    db.fail = LeaseLost("run r1 attempt 1 lost its lease")
    db.allow()
    results = await asyncio.gather(first, behind, return_exceptions=True)
    assert [type(result) for result in results] == [LeaseLost, LeaseLost]
    db.fail = None
    db.allow()  # a commit of w1 alone would go through now: none is attempted
    assert db.commits == []
    assert commits._lanes == {}


# -- acknowledged early ---------------------------------------------------------------------------


async def test_early_writes_return_at_once_and_commit_in_order_in_fewer_batches() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("w0", None)])
    await db.started.wait()  # w0's commit is in flight; the writer went on long before
    for i in (1, 2, 3):
        commits.submit("r1", 1, [(f"w{i}", None)])
    draining = asyncio.create_task(commits.drain("r1", 1))
    db.allow(2)
    assert await draining is None
    assert db.commits == [("r1", 1, ["w0"]), ("r1", 1, ["w1", "w2", "w3"])]
    assert commits._lanes == {} and commits._early == {}


async def test_an_early_write_that_failed_refuses_the_next_until_drained() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("w0", None)])
    await db.started.wait()
    commits.submit("r1", 1, [("w1", None)])  # behind w0: refused with it
    db.fail = LeaseLost("run r1 attempt 1 lost its lease")
    db.allow()
    await asyncio.wait(set(commits._early[("r1", 1)].commits))
    with pytest.raises(LeaseLost):
        commits.submit("r1", 1, [("w2", None)])  # nothing is handed over
    failure = await commits.drain("r1", 1)
    assert isinstance(failure, LeaseLost)
    assert db.commits == []
    # Drained: the attempt may write again (a retry after an outage continues from what landed).
    db.fail = None
    db.started.clear()
    commits.submit("r1", 1, [("w3", None)])
    db.allow()
    assert await commits.drain("r1", 1) is None
    assert db.commits == [("r1", 1, ["w3"])]


async def test_an_awaited_write_after_early_ones_commits_after_them() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("early", None)])
    await db.started.wait()
    awaited = asyncio.create_task(commits.commit("r1", 1, [("awaited", None)]))
    db.allow(2)
    await awaited
    assert db.commits == [("r1", 1, ["early"]), ("r1", 1, ["awaited"])]
    assert await commits.drain("r1", 1) is None


async def test_draining_an_attempt_without_early_writes_returns_at_once() -> None:
    commits = AttemptCommits(Database().commit)
    assert await commits.drain("r1", 1) is None


# -- lingering, and the writes left to the finish ---------------------------------------------------


@pytest.fixture
def linger_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lingering writes begin on the loop's next turn, not after `LINGER_SECONDS`."""
    monkeypatch.setattr(_attempt_commits, "LINGER_SECONDS", 0)


async def _first_committed(commits: AttemptCommits, db: Database) -> None:
    """Run r1's first write, committed without a drain: the attempt's next writes linger."""
    commits.submit("r1", 1, [("first", None)])
    db.allow()
    await asyncio.wait(set(commits._early[("r1", 1)].commits))


async def test_the_first_early_write_begins_at_once_and_the_next_linger_into_one_batch() -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    for i in range(3):
        commits.submit("r1", 1, [(f"w{i}", None)])
    await db.started.wait()  # w0's batch, alone: it did not wait for the others
    db.started.clear()
    db.allow()
    await db.started.wait()  # after the linger: one batch for w1 and w2
    db.allow()
    assert await commits.drain("r1", 1) is None
    assert db.commits == [("r1", 1, ["w0"]), ("r1", 1, ["w1", "w2"])]


async def test_the_writes_still_lingering_at_the_end_are_left_to_the_finish(linger_now: None) -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("w0", None)])
    await db.started.wait()  # w0 in flight
    commits.submit("r1", 1, [("w1", None)])
    commits.submit("r1", 1, [("w2", None)])
    draining = asyncio.create_task(commits.drain("r1", 1, for_finish=True))
    await asyncio.sleep(0)
    db.allow()
    assert await draining is None  # w0 committed; w1 and w2 left, not begun
    for _ in range(3):
        await asyncio.sleep(0)  # a linger timer left armed would begin them now
    assert db.commits == [("r1", 1, ["w0"])]
    assert await commits.take_for_finish("r1", 1) == [("w1", None), ("w2", None)]
    assert commits._early == {} and await commits.take_for_finish("r1", 1) == []


async def test_writes_given_back_by_a_failed_finish_go_with_its_next_try(linger_now: None) -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    await _first_committed(commits, db)
    commits.submit("r1", 1, [("last", None)])
    assert await commits.drain("r1", 1, for_finish=True) is None
    taken = await commits.take_for_finish("r1", 1)
    commits.give_back("r1", 1, taken)  # its transaction failed
    assert await commits.take_for_finish("r1", 1) == [("last", None)]
    assert db.commits == [("r1", 1, ["first"])]


async def test_writes_left_to_a_finish_that_never_comes_commit_at_the_next_drain(linger_now: None) -> None:
    """A cancel or a hand-back after the run ended drains without `for_finish`: what was left to
    the finish commits then, before the thread is read or rolled back."""
    db = Database()
    commits = AttemptCommits(db.commit)
    await _first_committed(commits, db)
    commits.submit("r1", 1, [("last", None)])
    assert await commits.drain("r1", 1, for_finish=True) is None
    db.allow()
    assert await commits.drain("r1", 1) is None
    assert db.commits == [("r1", 1, ["first"]), ("r1", 1, ["last"])]
    assert commits._early == {}


async def test_a_failed_write_drops_those_lingering_behind_it(linger_now: None) -> None:
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("w0", None)])
    await db.started.wait()
    commits.submit("r1", 1, [("w1", None)])  # lingering behind w0
    draining = asyncio.create_task(commits.drain("r1", 1, for_finish=True))
    await asyncio.sleep(0)
    db.fail = LeaseLost("run r1 attempt 1 lost its lease")
    db.allow()
    assert isinstance(await draining, LeaseLost)
    assert await commits.take_for_finish("r1", 1) == []  # nothing left to a finish
    assert db.commits == []


async def test_a_finish_after_a_failed_write_it_was_not_told_of_refuses(linger_now: None) -> None:
    """The worker drains, and rides out a failure, before it finishes; a finish that finds one
    unheard raises rather than commit the run's end without the write."""
    db = Database()
    commits = AttemptCommits(db.commit)
    commits.submit("r1", 1, [("w0", None)])
    await db.started.wait()
    db.fail = StoreUnavailable("the database went away")
    db.allow()
    with pytest.raises(RuntimeError, match="checkpoint write failed"):
        await commits.take_for_finish("r1", 1)
    assert commits._early == {}
