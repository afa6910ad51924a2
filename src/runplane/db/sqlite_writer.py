"""Group commit: the write transactions of concurrent callers, committed together, on one thread.

Every run makes several short write transactions (the store's admission, claim and finish, and the
checkpointer's `aput` / `aput_writes`), each of which used to cost a thread hop and a COMMIT of its
own. A `GroupCommit` queues them instead. While one batch runs on the connection's thread, the
next ones gather on the event loop; then they all run as one function there, in one
`BEGIN IMMEDIATE ... COMMIT`:

- a member whose body raises is rolled back alone, and hears its error; its neighbours are
  committed as if it had never run. (The batch first runs without a savepoint per member, two
  statements each; when a member raises, that transaction is rolled back, and the batch runs again
  with each member inside its own SAVEPOINT. No caller has been answered in between, and a body is
  a plain function of the database, so running it again is running it once.)
- should the transaction itself fail after BEGIN (an I/O error, a member that aborted the whole
  transaction), nothing of it is durable: it is rolled back and each member runs again alone, in
  its own transaction, so one bad member does not take the others down;
- every caller is answered only after the COMMIT that contains its writes has returned: in WAL mode
  with `synchronous = NORMAL` the commit is then in the WAL file, so a batched commit acknowledges
  only what survives `kill -9`, exactly as a commit of its own did.

Plain reads and statements that commit themselves (`run`) ride in the same hop, before the batch's
transaction, outside it: a read never sees a batch's uncommitted writes.

The batch holds the connection's `asyncio.Lock` while it runs, so code that uses the connection
statement by statement under that lock (migrations, searches, LangGraph's own methods on its
connection) never interleaves with it. Other processes on the file see ordinary `BEGIN IMMEDIATE`
transactions and wait for them with their busy timeout.

When the connection is idle (no batch running or queued, the lock free) and no other caller wrote
in this iteration of the loop, a caller's transaction or read runs at once on the event loop's
thread instead, with the same semantics and no hop (`sqlite_inline`, which says how it stays safe).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiosqlite

from runplane.core.errors import StoreUnavailable
from runplane.db import sqlite_inline
from runplane.db.sqlite_inline import CHECKPOINT_EVERY, INLINE_MAX_MEMBERS, INLINE_PER_TICK, ConnectionLock

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A member's body: plain synchronous code on the connection's thread.
Body = Callable[[sqlite3.Connection], T]

#: At most this many members in one transaction (a bound on how long the write lock is held).
MAX_BATCH = 256

#: A member's result: (True, its value) or (False, the exception its body raised).
Outcome = tuple[bool, Any]


@dataclass(slots=True)
class _Member:
    body: Body[Any]
    #: True: in the batch's transaction; False: before it, outside any transaction.
    batched: bool
    future: asyncio.Future[Any]


def _call(body: Body[Any], conn: sqlite3.Connection) -> Outcome:
    try:
        return True, body(conn)
    except Exception as exc:
        return False, exc


def _alone(body: Body[Any], conn: sqlite3.Connection) -> Outcome:
    """`body` in a `BEGIN IMMEDIATE` transaction of its own."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        return False, exc
    outcome = _call(body, conn)
    try:
        if outcome[0]:
            conn.execute("COMMIT")
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
    except Exception as exc:
        if conn.in_transaction:
            conn.rollback()
        return False, exc
    return outcome


class _MemberFailed(Exception):
    """A member raised in a batch run without savepoints: the batch was rolled back."""


def _together(bodies: list[Body[Any]], conn: sqlite3.Connection, *, isolated: bool) -> list[Outcome]:
    """`bodies` in the transaction just begun, then COMMIT; raises (rolled back) when the
    transaction failed. `isolated`: each body in a savepoint, rolled back alone when it raises;
    else a body that raises rolls the whole batch back (`_MemberFailed`)."""
    outcomes: list[Outcome] = []
    try:
        for body in bodies:
            if isolated:
                conn.execute("SAVEPOINT member")
            outcome = _call(body, conn)
            if isolated:
                if not outcome[0]:
                    conn.execute("ROLLBACK TO member")
                conn.execute("RELEASE member")
            elif not outcome[0]:
                raise _MemberFailed
            outcomes.append(outcome)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return outcomes


def _begin_and_run(bodies: list[Body[Any]], conn: sqlite3.Connection, *, isolated: bool) -> list[Outcome]:
    """`_together` in a new `BEGIN IMMEDIATE` transaction; when BEGIN finds no write lock within
    the busy timeout, every member hears it (each alone would wait as long again)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except Exception as exc:
        return [(False, exc)] * len(bodies)
    return _together(bodies, conn, isolated=isolated)


def run_batch(conn: sqlite3.Connection, members: list[tuple[Body[Any], bool]]) -> list[Outcome]:
    """One batch on the connection's thread: the unbatched members one by one, then the batched
    ones in one transaction (see the module's docstring)."""
    outcomes: list[Outcome | None] = [None] * len(members)
    batched: list[int] = []
    for index, (body, in_batch) in enumerate(members):
        if in_batch:
            batched.append(index)
        else:
            outcomes[index] = _call(body, conn)
    if len(batched) == 1:
        outcomes[batched[0]] = _alone(members[batched[0]][0], conn)
    elif batched:
        bodies = [members[index][0] for index in batched]
        try:
            try:
                # Most batches fail nowhere: no savepoint statements per member for them.
                together = _begin_and_run(bodies, conn, isolated=False)
            except _MemberFailed:
                # Rolled back, none answered yet: again, each member in a savepoint.
                together = _begin_and_run(bodies, conn, isolated=True)
            for index, outcome in zip(batched, together, strict=True):
                outcomes[index] = outcome
        except Exception:
            for index in batched:  # nothing of it is durable: each alone, so one cannot sink all
                outcomes[index] = _alone(members[index][0], conn)
    return cast(list[Outcome], outcomes)


class GroupCommit:
    """The write queue of one aiosqlite connection (see the module's docstring).

    Args:
        connection: the connection, or None once it is closed.
        lock: held by every other user of the connection around its statements; a
            `ConnectionLock` lets idle batches run inline (any other lock: always a hop).
    """

    def __init__(self, connection: Callable[[], aiosqlite.Connection | None], lock: asyncio.Lock) -> None:
        self._connection = connection
        self._lock = lock
        self._pending: list[_Member] = []
        self._drainer: asyncio.Task[None] | None = None
        #: The lock, when its acquisitions tell whether the connection's thread is idle.
        self._counted = lock if isinstance(lock, ConnectionLock) else None
        #: `_counted.acquisitions` when this writer last left the connection's thread idle.
        self._idle_at = -1
        #: The connection `prepare` ran on, and its busy timeout (None: never inline).
        self._prepared: tuple[sqlite3.Connection, int | None] | None = None
        #: The task whose inline batches ran in this iteration of the loop, and how many.
        self._tick_task: asyncio.Task[Any] | None = None
        self._tick_batches = 0
        #: Members since the last checkpoint, and how many the next one waits for.
        self._uncheckpointed = 0
        self._checkpoint_every = CHECKPOINT_EVERY
        self._checkpointing: asyncio.Task[None] | None = None
        #: Transactions committed and batches run (`inline` of them on the loop's thread), for
        #: tests and the curious.
        self.batches = 0
        self.members = 0
        self.inline = 0

    async def transact(self, body: Body[T]) -> T:
        """`body` in a write transaction, answered once it is committed; its exception (the
        member rolled back) otherwise."""
        return await self._submit(body, batched=True)

    async def run(self, body: Body[T]) -> T:
        """`body` outside any transaction: reads, a statement atomic on its own, or code that
        opens its own transaction; in the next batch's hop, or inline. At most one write (a
        statement or a transaction): a body stopped inline by another connection's write lock
        has then changed nothing, and runs again in the hop."""
        return await self._submit(body, batched=False)

    async def _submit(self, body: Body[T], *, batched: bool) -> T:
        if self._counted is not None and self._drainer is None and not self._pending:
            task = asyncio.current_task()
            # Another caller wrote in this iteration of the loop: callers arrive together, so they
            # gather (in the drainer, next iteration) rather than each commit alone.
            if not self._tick_batches or (self._tick_task is task and self._tick_batches < INLINE_PER_TICK):
                outcomes = self._inline([(body, batched)], task)
                if outcomes is not None and not sqlite_inline.stopped(*outcomes[0]):
                    self._ran(1, inline=True)
                    ok, value = outcomes[0]
                    if ok:
                        return cast(T, value)
                    raise value
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Member(body, batched, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future  # the body's own exception: the store translates it at its edge

    def _inline(
        self, members: list[tuple[Body[Any], bool]], task: asyncio.Task[Any] | None
    ) -> list[Outcome] | None:
        """`run_batch` at once on this thread when the connection is idle; None when it is not
        (the batch hops). A member `stopped` here hops too."""
        lock = self._counted
        if lock is None or lock.locked() or lock.acquisitions != self._idle_at:
            return None  # a hop is running, or another user's statement may still be queued
        db = self._connection()
        conn = None if db is None else sqlite_inline.raw_connection(db)
        prepared = self._prepared
        if conn is None or prepared is None or prepared[0] is not conn or prepared[1] is None:
            return None  # closed, or not yet prepared (the first batch on a connection hops)
        if conn.in_transaction:
            return None
        if not sqlite_inline.enter(conn):
            self._prepared = (conn, None)
            return None
        try:
            outcomes = run_batch(conn, members)
        finally:
            sqlite_inline.leave(conn, prepared[1])
        if not self._tick_batches:
            asyncio.get_running_loop().call_soon(self._next_tick)
        self._tick_task = task
        self._tick_batches += 1
        return outcomes

    def _next_tick(self) -> None:
        self._tick_task, self._tick_batches = None, 0

    def _ran(self, members: int, *, inline: bool = False) -> None:
        self.inline += inline
        self.batches += 1
        self.members += members
        if self._counted is None:
            return  # SQLite's own auto-checkpoint still runs on this connection
        self._uncheckpointed += members
        if self._uncheckpointed >= self._checkpoint_every and self._checkpointing is None:
            self._checkpointing = asyncio.get_running_loop().create_task(
                self._checkpoint(self._uncheckpointed)
            )
            self._uncheckpointed = 0

    async def _checkpoint(self, members: int) -> None:
        """A PASSIVE checkpoint on the connection's thread, under the lock (no batch meanwhile),
        `members` after the last one."""
        try:
            async with self._lock:
                db = self._connection()
                if db is None:
                    return
                pages = await sqlite_inline.on_its_thread(db, sqlite_inline.checkpoint)
                self._idle()
            self._checkpoint_every = sqlite_inline.next_checkpoint(members, pages)
        except Exception:  # a closed connection: the next writer's checkpoint does it
            logger.debug("sqlite: checkpoint skipped", exc_info=True)
        finally:
            self._checkpointing = None

    def _idle(self) -> None:
        """Called while holding the lock, right after a hop returned: everything queued on the
        connection's thread before it has run, and nobody else could queue since."""
        if self._counted is not None:
            self._idle_at = self._counted.acquisitions

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                await self._run(batch)
        except BaseException as exc:  # cancelled with the loop: nobody may wait forever
            for member in self._pending:
                if not member.future.done():
                    member.future.set_exception(StoreUnavailable(f"sqlite: writer stopped ({exc!r})"))
            self._pending.clear()
            raise
        finally:
            self._drainer = None

    async def _run(self, batch: list[_Member]) -> None:
        batch = [member for member in batch if not member.future.done()]  # cancelled: dropped
        if 0 < len(batch) <= INLINE_MAX_MEMBERS:  # a few callers at once: still no hop
            outcomes = self._inline([(member.body, member.batched) for member in batch], None)
            if outcomes is not None:
                answered = [
                    (m, o) for m, o in zip(batch, outcomes, strict=True) if not sqlite_inline.stopped(*o)
                ]
                if answered:
                    self._ran(len(answered), inline=True)
                    self._answer(answered)
                batch = [m for m, o in zip(batch, outcomes, strict=True) if sqlite_inline.stopped(*o)]
        if not batch:
            return
        try:
            async with self._lock:
                db = self._connection()
                if db is None:
                    raise StoreUnavailable("the SQLite database is not open")
                batch = [member for member in batch if not member.future.done()]  # cancelled: dropped
                if not batch:
                    return
                outcomes = await self._outcomes(db, [(member.body, member.batched) for member in batch])
                self._idle()
        except Exception as exc:
            for member in batch:
                if not member.future.done():
                    member.future.set_exception(exc)
            return
        except BaseException as exc:  # cancelled: nobody may wait forever
            for member in batch:
                if not member.future.done():
                    member.future.set_exception(StoreUnavailable(f"sqlite: writer stopped ({exc!r})"))
            raise
        self._ran(len(batch))
        self._answer(zip(batch, outcomes, strict=True))

    @staticmethod
    def _answer(answers: Iterable[tuple[_Member, Outcome]]) -> None:
        for member, (ok, value) in answers:
            if member.future.done():  # its caller was cancelled meanwhile
                continue
            if ok:
                member.future.set_result(value)
            else:
                member.future.set_exception(value)

    async def _outcomes(
        self, db: aiosqlite.Connection, members: list[tuple[Body[Any], bool]]
    ) -> list[Outcome]:
        conn = sqlite_inline.raw_connection(db)
        if (
            self._counted is not None
            and conn is not None
            and (self._prepared is None or self._prepared[0] is not conn)
        ):
            self._prepared = (conn, await sqlite_inline.on_its_thread(db, sqlite_inline.prepare))
        return await sqlite_inline.on_its_thread(db, run_batch, members)


#: The open group commits by database file, so that a checkpointer on the store's file writes
#: through the store's (one writer, one commit for both); keyed by the event loop too.
_shared: dict[tuple[str, int], GroupCommit] = {}


def _key(path: str) -> tuple[str, int] | None:
    if path == ":memory:" or path.startswith("file:"):
        return None  # an in-memory database is its connection's alone
    return os.path.realpath(path), id(asyncio.get_running_loop())


def share(path: str, writer: GroupCommit) -> None:
    """Offer `writer` to other users of database file `path` in this event loop."""
    key = _key(path)
    if key is not None:
        _shared.setdefault(key, writer)


def unshare(path: str, writer: GroupCommit) -> None:
    key = _key(path)
    if key is not None and _shared.get(key) is writer:
        del _shared[key]


def shared(path: str) -> GroupCommit | None:
    """The writer a store of this event loop opened on database file `path`, if any."""
    key = _key(path)
    return None if key is None else _shared.get(key)
