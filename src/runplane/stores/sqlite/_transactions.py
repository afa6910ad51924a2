"""One thread hop per transaction, and one per batch of them: a store method's reads and writes run
as one plain function on the connection's thread, through the connection's `GroupCommit`.

aiosqlite runs each statement on its connection's thread and hands the result back to the event
loop: a hop (a queue put, a thread wake-up, a `call_soon_threadsafe`) that cost more than the
statement itself, and a run's admission made eight of them. Here a method's whole transaction
(`BEGIN IMMEDIATE`, its statements, `COMMIT` or `ROLLBACK`) is one function queued on that same
thread, so it costs one hop, and nothing else can run on the connection in its middle. The
`GroupCommit` (`_writer`) then runs the transactions of concurrent callers in one hop and one COMMIT,
and a caller's transaction on the event loop's thread itself, with no hop, while the connection is
idle (`runplane.db.sqlite_inline`).

A caller cancelled before its batch left the event loop is dropped from it; one cancelled later does
not interrupt its transaction: the function runs to its `COMMIT` (or its savepoint's rollback on
error) on the thread; the caller just does not hear the answer.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from runplane.core.clock import Clock
from runplane.core.errors import LeaseLost, NotFound
from runplane.core.lifecycle import ThreadSettlement, webhook_payload, webhook_url
from runplane.core.models import Run
from runplane.db.sqlite_writer import GroupCommit
from runplane.stores.sqlite._codec import dump_json, load_json, to_micros
from runplane.stores.sqlite._connection import QUERIES, translate_errors

T = TypeVar("T")

#: A transaction's body: plain synchronous code on the connection's thread.
Body = Callable[[sqlite3.Connection], T]


def rows(conn: sqlite3.Connection, name: str, params: Mapping[str, Any], sql: str | None = None) -> list[Any]:
    """Run one statement and read all its rows (a `RETURNING` statement not read to its end stays
    "in progress" and makes the COMMIT fail)."""
    return conn.execute(sql or QUERIES[name], params).fetchall()


def row(
    conn: sqlite3.Connection, name: str, params: Mapping[str, Any], sql: str | None = None
) -> sqlite3.Row | None:
    found = rows(conn, name, params, sql)
    return cast(sqlite3.Row, found[0]) if found else None


def written(found: sqlite3.Row | None) -> sqlite3.Row:
    """The row an update of a run locked by this write transaction returned (it always matches)."""
    assert found is not None
    return found


def owned_thread(conn: sqlite3.Connection, thread_id: str, owner: str) -> sqlite3.Row:
    found = row(conn, "get_thread", {"thread_id": thread_id})
    if found is None or found["owner"] != owner:
        raise NotFound(f"thread {thread_id} not found")
    return found


def owned_run(conn: sqlite3.Connection, run_id: str, owner: str, thread_id: str | None) -> sqlite3.Row:
    found = row(conn, "get_run", {"run_id": run_id})
    if (
        found is None
        or found["owner"] != owner
        or (thread_id is not None and found["thread_id"] != thread_id)
    ):
        raise NotFound(f"run {run_id} not found")
    return found


def lease_lost(run_id: str, attempt: int) -> LeaseLost:
    return LeaseLost(f"run {run_id} attempt {attempt} no longer holds the lease")


def in_transaction(conn: sqlite3.Connection, body: Body[T]) -> T:
    conn.execute(QUERIES["begin_immediate"])
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


class Transactions:
    """The one-hop plumbing of `SqliteStore`, shared by its parts (threads, runs)."""

    _clock: Clock
    _writer: GroupCommit

    def _now(self) -> int:
        return to_micros(self._clock.now())

    async def _read(self, body: Body[T]) -> T:
        """`body` on the connection's thread: reads, or one atomic statement, outside a transaction."""
        with translate_errors():
            return await self._writer.run(body)

    async def _transact(self, body: Body[T]) -> T:
        """`body` in a `BEGIN IMMEDIATE` transaction on the connection's thread, committed with
        those of concurrent callers (`GroupCommit`): answered once committed; rolled back alone
        when it raises."""
        with translate_errors():
            return await self._writer.transact(body)

    # -- pieces of transactions ---------------------------------------------------------------

    def _settle_thread_in(
        self, conn: sqlite3.Connection, thread_id: str, settlement: ThreadSettlement
    ) -> None:
        rows(
            conn, "settle_thread", {"thread_id": thread_id, "outcome": settlement.status, "now": self._now()}
        )
        if settlement.sets_error:
            rows(conn, "set_thread_error", {"thread_id": thread_id, "error": settlement.error})

    def _enqueue_webhook_in(self, conn: sqlite3.Connection, run: Run) -> None:
        """Put the run's webhook in the outbox, in the transaction that made it terminal."""
        url = webhook_url(run)
        if url is None:
            return
        found = row(conn, "thread_values", {"thread_id": run.thread_id})
        values = None if found is None or found["state_values"] is None else load_json(found["state_values"])
        params = {
            "delivery_id": str(uuid.uuid4()),
            "run_id": run.run_id,
            "url": url,
            "payload": dump_json(webhook_payload(run, values)),
            "now": self._now(),
        }
        rows(conn, "insert_webhook", params)
