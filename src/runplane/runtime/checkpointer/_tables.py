"""SQL over LangGraph's checkpoint tables that the SQLite and PostgreSQL adapters share: the
`checkpointer.ttl` sweep (`runtime/checkpoint_ttl.py` says what it does and why).

`{p}` is the driver's placeholder (`?` or `%s`), `{writes}` the pending-writes table (`writes` or
`checkpoint_writes`).
"""

from __future__ import annotations

from typing import Literal

#: What the sweep does to an expired thread (LangGraph's `checkpointer.ttl.strategy`).
Strategy = Literal["delete", "keep_latest"]

#: Threads whose latest root checkpoint is older than a cutoff, oldest first.
EXPIRED_THREADS = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id "
    "HAVING max(checkpoint_id) < {p} ORDER BY max(checkpoint_id) LIMIT {p}"
)

#: Each delete re-checks the thread's age in the same statement.
_STILL_EXPIRED = (
    "(SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = {p} AND checkpoint_ns = '') < {p}"
)
_NOT_LATEST = (
    "checkpoint_id < (SELECT max(c.checkpoint_id) FROM checkpoints c "
    "WHERE c.thread_id = checkpoints.thread_id AND c.checkpoint_ns = checkpoints.checkpoint_ns)"
)
_ORPHANED_WRITES = (
    "DELETE FROM {writes} WHERE thread_id = {p} AND NOT EXISTS (SELECT 1 FROM checkpoints c "
    "WHERE c.thread_id = {writes}.thread_id AND c.checkpoint_ns = {writes}.checkpoint_ns "
    "AND c.checkpoint_id = {writes}.checkpoint_id)"
)


def expire_statements(p: str, writes: str, strategy: Strategy) -> list[str]:
    """The deletes for one expired thread (parameters: thread id, thread id, cutoff; then thread
    id), writes last: they only drop writes whose checkpoint is gone."""
    still = _STILL_EXPIRED.format(p=p)
    first = f"DELETE FROM checkpoints WHERE thread_id = {p} AND {still}"
    if strategy == "keep_latest":
        first += f" AND {_NOT_LATEST}"
    return [first, _ORPHANED_WRITES.format(p=p, writes=writes)]
