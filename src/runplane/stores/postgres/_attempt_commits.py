"""Group commit of one attempt's fenced checkpoint writes (PostgreSQL).

LangGraph writes a run's checkpoints and pending writes from background tasks (`durability="async"`):
a step's `aput_writes` and the next checkpoint's `aput` are often in flight together. Each is fenced
(`PostgresLeases.hold_attempt`): its statements commit with a check of the attempt's lease, in one
round trip. Committed one by one, a run of the echo graph made five such round trips, each with its
own COMMIT and WAL flush, and about three of every four started while the previous one of the same
run was still in flight.

`AttemptCommits` commits one attempt's writes one batch at a time: the writes that arrive while a
batch of the same attempt is in flight go together in the next one, with one lease check and one
COMMIT. The first write waits for nobody, so nothing is delayed to form a batch. What does not
change:

- a write returns only once it has committed, with its attempt's lease checked in its transaction;
- a batch commits whole or not at all, so a lost lease refuses every write in it (a write of a
  newer attempt is never in it: batches are per attempt);
- one attempt's writes commit in the order they were handed over (they used to race each other on
  separate connections), and none commits once an earlier one failed to: a batch that fails fails
  the writes waiting behind it too. A later checkpoint committed without an earlier one would point
  at channel values that were never written (LangGraph writes a value with the checkpoint that
  introduced its version).

Acknowledged early (`submit`, for `durability="async"`): the write is handed over and the writer goes
on at once, as LangGraph's own asynchronous durability intends. The attempt's first write begins
to commit at once, while the graph goes on; nobody waits for the later ones, so they linger
(`LINGER_SECONDS`) for the attempt's next writes before their batch begins: the writes of a short
run's last steps share one transaction.
The order and the all-or-nothing rule above hold as well. What changes is when a failure is
heard: the next write of the attempt raises it, and so does `drain`, which the worker awaits
before the run ends (its final state read meanwhile from its own puts), before it reads the
saver's database, cancels or hands the run back.

The run's end (`drain(for_finish=True)`) does not start the writes still lingering: it waits for
those in flight and leaves the rest to the finish, which commits them in its own transaction,
after the same lease check (`take_for_finish`). A run that puts its last checkpoint and ends then
makes one transaction of both, not two: one round trip and one WAL flush fewer per run, on its
path. Outcome and last checkpoint commit together or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from psycopg.abc import Params, Query

Statements = list[tuple[Query, Params | None]]

#: Commits `statements` in one transaction that checks the attempt's lease (`run_id`, `attempt`).
CommitChecked = Callable[[str, int, Statements], Awaitable[None]]

#: How long a write acknowledged early, once the attempt's first batch began, waits for the
#: attempt's next writes before its batch begins. Long enough for a short run's last writes and its
#: end to meet under load (an echo run takes about 2 ms from its first put to its end on an idle
#: server; with 16 clients, 25 ms left a second batch to half the runs, 100 ms to none), short
#: beside what a crash costs a long run: the steps of its last 100 ms, done again on resume.
LINGER_SECONDS = 0.1


@dataclass(eq=False, slots=True)
class _Write:
    statements: Statements
    committed: asyncio.Future[None]


@dataclass(eq=False, slots=True)
class _Lane:
    """One attempt's writes: the one committing batch (under `lock`) and those waiting for the next."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: list[_Write] = field(default_factory=list)
    users: int = 0


@dataclass(eq=False, slots=True)
class _Early:
    """One attempt's writes acknowledged early: those lingering (not begun), their commits in
    flight, and the first failure."""

    commits: set[asyncio.Task[None]] = field(default_factory=set)
    failed: BaseException | None = None
    lingering: Statements = field(default_factory=list)
    #: Begins the lingering writes' batch; None while none linger, or once they are left to the finish.
    timer: asyncio.TimerHandle | None = None
    #: A batch was begun: the writes handed over since linger.
    begun: bool = False

    def stop_timer(self) -> None:
        """The lingering writes' batch is not to begin when the linger ends (it begins now, or
        they are left to the finish)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    async def settled(self) -> None:
        """Wait until every commit in flight (those begun meanwhile too) has committed or failed."""
        while self.commits:
            await asyncio.wait(set(self.commits))


class AttemptCommits:
    """Commits each attempt's fenced writes in batches (see the module doc)."""

    def __init__(self, commit_checked: CommitChecked) -> None:
        self._commit_checked = commit_checked
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._early: dict[tuple[str, int], _Early] = {}

    def submit(self, run_id: str, attempt: int, statements: Statements) -> None:
        """Hand `statements` over to be committed as `commit` would, without waiting for it: at once
        for the attempt's first write, else in a batch that begins once they have lingered
        `LINGER_SECONDS`, with the attempt's writes handed over meanwhile (or in the attempt's
        finish: `take_for_finish`).

        Raises (nothing handed over) the failure of an earlier write of the attempt: no later
        write commits until `drain` has heard it.
        """
        key = (run_id, attempt)
        early = self._early.get(key)
        if early is None:
            early = self._early[key] = _Early()
        if early.failed is not None:
            raise early.failed
        early.lingering.extend(statements)
        if not early.begun:
            self._begin_lingering(run_id, attempt, early)  # at once: it overlaps the graph's next steps
        elif early.timer is None:
            early.timer = asyncio.get_running_loop().call_later(
                LINGER_SECONDS, self._begin_lingering, run_id, attempt, early
            )

    def _begin_lingering(self, run_id: str, attempt: int, early: _Early) -> None:
        """Start the batch of the writes lingering (a task per batch, created in the order the
        writes were handed over: tasks start in that order, so they reach the lane in it)."""
        early.stop_timer()
        statements, early.lingering = early.lingering, []
        if not statements or early.failed is not None:
            return  # after a failed write, none commits (see the module doc)
        early.begun = True
        task = asyncio.get_running_loop().create_task(self.commit(run_id, attempt, statements))
        early.commits.add(task)
        task.add_done_callback(lambda done: self._committed_early(early, done))

    @staticmethod
    def _committed_early(early: _Early, task: asyncio.Task[None]) -> None:
        early.commits.discard(task)
        if task.cancelled():
            return
        failure = task.exception()
        if failure is not None and early.failed is None:
            early.failed = failure

    async def drain(self, run_id: str, attempt: int, *, for_finish: bool = False) -> BaseException | None:
        """Wait until every write of the attempt acknowledged early has committed or failed, and
        forget them. Returns the first failure (None: every one committed); the attempt may then
        write again (a retry after an outage starts from what did commit).

        With `for_finish` (the run ended), the writes still lingering are not begun: they are left
        to the attempt's finish (`take_for_finish`), unless one in flight failed (then none of
        them will commit). A later `drain` without it begins them after all.
        """
        key = (run_id, attempt)
        early = self._early.get(key)
        if early is None:
            return None
        if for_finish:
            early.stop_timer()
        else:
            self._begin_lingering(run_id, attempt, early)
        await early.settled()
        if early.failed is None and early.lingering:
            return None  # left to the finish (`for_finish`)
        self._forget(key, early)
        return early.failed

    async def take_for_finish(self, run_id: str, attempt: int) -> Statements:
        """The attempt's writes left to its finish (`drain(for_finish=True)`), to commit in the
        finish's transaction after its lease check; forgotten here. Call `give_back` with them if
        that transaction failed, so that the next try of the finish commits them again.

        Raises `RuntimeError` when an earlier write of the attempt failed: the finish must not
        commit without it (the worker drains, and rides out such a failure, before it finishes).
        """
        key = (run_id, attempt)
        early = self._early.get(key)
        if early is None:
            return []
        early.stop_timer()  # if not drained for the finish, its lingering writes go with it too
        await early.settled()
        self._forget(key, early)
        if early.failed is not None:
            raise RuntimeError(f"run {run_id} attempt {attempt}: a checkpoint write failed") from early.failed
        return early.lingering

    def _forget(self, key: tuple[str, int], early: _Early) -> None:
        # Unless a wait that ended meanwhile forgot it first (and later writes made another).
        if self._early.get(key) is early:
            del self._early[key]

    def give_back(self, run_id: str, attempt: int, statements: Statements) -> None:
        """Hold `statements` (from `take_for_finish`, whose transaction failed) for the next try of
        the attempt's finish, ahead of any write handed over since."""
        if statements:
            early = self._early.setdefault((run_id, attempt), _Early())
            early.lingering[:0] = statements

    async def commit(self, run_id: str, attempt: int, statements: Statements) -> None:
        """Commit `statements` with a check of the lease of (`run_id`, `attempt`), together with
        the attempt's other writes waiting at that moment; return once they have committed.

        Raises what the batch's commit raised (`LeaseLost`, `StoreUnavailable`, ...).
        """
        key = (run_id, attempt)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        write = _Write(statements, asyncio.get_running_loop().create_future())
        lane.waiting.append(write)
        lane.users += 1
        try:
            async with lane.lock:
                if not write.committed.done():  # else an earlier write's batch took it
                    await self._commit_batch(lane, run_id, attempt, write)
            return write.committed.result()
        except asyncio.CancelledError:
            if write in lane.waiting:  # not taken by any batch: it never will be
                lane.waiting.remove(write)
            write.committed.cancel()  # a batch that took it no longer reports to it
            raise
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]

    async def _commit_batch(self, lane: _Lane, run_id: str, attempt: int, leader: _Write) -> None:
        """Commit every waiting write and settle each one's future (the leader's too)."""
        batch, lane.waiting = lane.waiting, []
        try:
            await self._commit_checked(run_id, attempt, [s for write in batch for s in write.statements])
        except asyncio.CancelledError:
            # The leader's task was cancelled, not the others': whether the batch committed is
            # unknown, and writes are upserts, so the next of them commits them again.
            lane.waiting[:0] = [write for write in batch if write is not leader]
            raise
        except Exception as exc:
            # The writes handed over after those of the batch fail with it: committed without
            # them, a later checkpoint could point at values that were never written.
            failed, lane.waiting = [*batch, *lane.waiting], []
            for write in failed:
                if not write.committed.done():
                    write.committed.set_exception(exc)
            return
        for write in batch:
            if not write.committed.done():
                write.committed.set_result(None)
