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
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import aiosqlite

from runplane.core.errors import StoreUnavailable

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
        lock: held by every other user of the connection around its statements.
    """

    def __init__(self, connection: Callable[[], aiosqlite.Connection | None], lock: asyncio.Lock) -> None:
        self._connection = connection
        self._lock = lock
        self._pending: list[_Member] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Transactions committed and batches run, for tests and the curious.
        self.batches = 0
        self.members = 0

    async def transact(self, body: Body[T]) -> T:
        """`body` in a write transaction, answered once it is committed; its exception (the
        member rolled back) otherwise."""
        return await self._submit(body, batched=True)

    async def run(self, body: Body[T]) -> T:
        """`body` outside any transaction (reads, a statement atomic on its own, or code that
        opens its own transaction), in the next batch's hop."""
        return await self._submit(body, batched=False)

    async def _submit(self, body: Body[T], *, batched: bool) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Member(body, batched, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future  # the body's own exception: the store translates it at its edge

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
        try:
            async with self._lock:
                db = self._connection()
                if db is None:
                    raise StoreUnavailable("the SQLite database is not open")
                batch = [member for member in batch if not member.future.done()]  # cancelled: dropped
                if not batch:
                    return
                outcomes = await self._outcomes(db, [(member.body, member.batched) for member in batch])
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
        self.batches += 1
        self.members += len(batch)
        for member, (ok, value) in zip(batch, outcomes, strict=True):
            if member.future.done():  # its caller was cancelled meanwhile
                continue
            if ok:
                member.future.set_result(value)
            else:
                member.future.set_exception(value)

    async def _outcomes(
        self, db: aiosqlite.Connection, members: list[tuple[Body[Any], bool]]
    ) -> list[Outcome]:
        # aiosqlite's queue to its connection thread, and its sqlite3 connection (private, pinned
        # in pyproject).
        connection = cast(Any, db)
        return cast(list[Outcome], await connection._execute(run_batch, connection._conn, members))


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
