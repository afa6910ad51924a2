"""The inline fast path of `GroupCommit`: a batch run on the event loop's own thread while the
connection is idle, instead of a hop through aiosqlite's connection thread.

A hop (a future, the drainer task, the lock, aiosqlite's queue, a thread wake-up, a
`call_soon_threadsafe`, a loop wake-up) costs 30-50 microseconds of latency and of CPU on both
threads on a calm machine, more when the two threads contend for the GIL, while the SQLite work of a
batch (WAL mode, `synchronous = NORMAL`: no fsync at COMMIT) is tens of microseconds. When runs come
one at a time nothing is gathered anyway, so every write paid a hop for a batch of one. So a caller
finding the connection idle runs its body at once; but only the first caller of an iteration of the
loop (or more of the same task, which is one caller going on): the others of that iteration are
concurrent, and gather into one batch, run inline too while small (`INLINE_MAX_MEMBERS`); a larger
one hops as before: its SQLite work then runs off the loop (the `sqlite3` module releases the GIL in
it) while the next batch gathers.

What keeps it as safe as the hop:

- Exclusive use of the connection. Every other user of it runs its statements under the
  connection's lock, a `ConnectionLock`, which counts its acquisitions: the writer goes inline only
  when the lock is free and nobody took it since the writer's own last hop. A caller cancelled
  while its statement was queued leaves that statement behind on the connection's thread after it
  released the lock; the count sends the next batch through the (first-in first-out) queue, behind
  it, and the batch after that may go inline again.
- Never waiting on the loop for another connection's write lock: the attempt runs with
  `busy_timeout = 0`; a member that meets the lock (`SQLITE_BUSY`) is run again in the hop,
  which waits with the connection's busy timeout.
- Never a long statement on the loop: a progress handler interrupts any statement of the attempt
  after `INLINE_BUDGET` virtual-machine instructions (about a millisecond: a scan, a long listing);
  that member, too, is run again in the hop.
  A member stopped either way changed nothing: the statement or transaction was rolled back
  (`run_batch`); so it runs once (a `run` body makes at most one write, see `GroupCommit.run`).
- No WAL checkpoint on the loop: a COMMIT that crosses `wal_autocheckpoint` checkpoints inside the
  committing call (copying the WAL into the file, two fsyncs: measured 6 to 8 ms for the default
  1000 pages). The writer's connection has `wal_autocheckpoint = 0`, and the writer runs a
  PASSIVE checkpoint in a hop of its own every so many members (inline or not), so many that the
  WAL holds about SQLite's default 1000 pages at each (`next_checkpoint`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

import aiosqlite

T = TypeVar("T")

#: Virtual-machine instructions one statement of an inline batch may run before it is interrupted
#: and run again off the loop (SQLite runs about 100 million a second here: about a millisecond).
INLINE_BUDGET = 100_000

#: The WAL length, in pages, at which the writer checkpoints: SQLite's default `wal_autocheckpoint`.
WAL_PAGES = 1000

#: Members (transactions and reads) of a writer between two checkpoints, at first: a run's make
#: about 2.5 pages each (measured). Each checkpoint rescales it from the WAL length it found, so
#: that the WAL holds about `WAL_PAGES` pages whatever the rows' sizes.
CHECKPOINT_EVERY = 400
CHECKPOINT_EVERY_RANGE = (16, 4096)

#: A batch gathered from this many callers at most still runs inline; a larger one hops (its SQLite
#: work then runs off the loop, and the next batch gathers meanwhile).
INLINE_MAX_MEMBERS = 8

#: Inline batches one task may run in one iteration of the loop before it yields through the hop
#: (a caller writing in a loop must not starve the others).
INLINE_PER_TICK = 32


class ConnectionLock(asyncio.Lock):
    """The `asyncio.Lock` around every use of a connection, counting its acquisitions (see the
    module's docstring: the writer's proof that nothing else runs on the connection's thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.acquisitions = 0

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        self.acquisitions += 1
        return True


def raw_connection(db: aiosqlite.Connection) -> sqlite3.Connection | None:
    """aiosqlite's `sqlite3` connection (private, pinned in pyproject), or None once closed."""
    connection = cast(Any, db)
    raw = connection._connection if connection._running else None
    return cast(sqlite3.Connection | None, raw)


async def on_its_thread(db: aiosqlite.Connection, function: Callable[..., T], *args: Any) -> T:
    """`function(conn, *args)` on aiosqlite's connection thread, `conn` its `sqlite3` connection:
    aiosqlite's private queue (pinned in pyproject), used here only."""
    connection = cast(Any, db)
    return cast(T, await connection._execute(function, connection._conn, *args))


def prepare(conn: sqlite3.Connection) -> int | None:
    """On the connection's thread, once per connection: checkpoints left to the writer, and the
    busy timeout to restore after each inline batch; None: the connection cannot go inline."""
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0").close()
        return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    except sqlite3.Error:
        return None


def checkpoint(conn: sqlite3.Connection) -> int | None:
    """A PASSIVE checkpoint, on the connection's thread: copies what no reader still needs and
    waits for nobody. Best effort: another connection's checkpoint or the next one does the rest.

    Returns:
        The WAL's length in pages it found; None when it failed or the database is not in WAL mode.
    """
    try:
        found = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    except sqlite3.Error:
        return None
    return int(found[1]) if found is not None and found[1] >= 0 else None


def next_checkpoint(members: int, pages: int | None) -> int:
    """Members until the next checkpoint, after one that found `pages` in the WAL `members` after
    the previous one."""
    low, high = CHECKPOINT_EVERY_RANGE
    if not pages:
        return high  # nothing written, or no WAL: only a bound
    return max(low, min(high, members * WAL_PAGES // pages))


def _interrupt() -> int:
    return 1  # called once a statement ran `INLINE_BUDGET` instructions: stop it


def enter(conn: sqlite3.Connection) -> bool:
    """Set `conn` up for an inline batch on this thread; False: it cannot be used here (opened
    without `check_same_thread=False`, or closed)."""
    try:
        conn.execute("PRAGMA busy_timeout = 0")
    except sqlite3.ProgrammingError:
        return False
    conn.set_progress_handler(_interrupt, INLINE_BUDGET)
    return True


def leave(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    conn.set_progress_handler(None, 0)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def stopped(ok: bool, value: Any) -> bool:
    """Whether a member's outcome is the inline attempt's limit (the write lock was taken, or the
    budget ran out) rather than its own answer: it runs again in the hop."""
    if ok or not isinstance(value, sqlite3.OperationalError):
        return False
    return value.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_INTERRUPT)
