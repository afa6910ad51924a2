"""`checkpointer.ttl` of a langgraph.json: threads idle for longer than `default_ttl` minutes lose
their checkpoints, swept every `sweep_interval_minutes`, at most `sweep_limit` threads a sweep.

LangGraph's server deletes an expired thread entirely (`strategy: "delete"`) or prunes it to its
latest state (`"keep_latest"`). Here a thread's age is the time since its last root checkpoint (a
run or a state update writes one, so activity restarts the clock), read from the checkpoint id
(a time-ordered UUIDv6). The sweep works on LangGraph's checkpoint tables, so:

- `delete` deletes every checkpoint of the thread (its state reads as empty afterwards); the
  thread's record and its runs stay in runplane's store (see the README's compatibility notes);
- `keep_latest` deletes every checkpoint but the latest of each namespace, with their writes.

Each thread is deleted by statements that re-check its age, so a thread that a run has just
written to is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.errors import InvalidInput

logger = logging.getLogger(__name__)

try:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
except ImportError:  # pragma: no cover - a hard dependency, but keep the import failure readable
    AsyncSqliteSaver = None  # type: ignore[assignment,misc]

try:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
except ImportError:  # pragma: no cover - the postgres extra is not installed
    AsyncPostgresSaver = None  # type: ignore[assignment,misc]

#: LangGraph's server's default batch of threads per sweep.
DEFAULT_SWEEP_LIMIT = 10_000
#: Minutes between sweeps when `sweep_interval_minutes` is not given (LangGraph's store default).
DEFAULT_SWEEP_MINUTES = 5.0
#: 100 ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
_UUID_EPOCH_OFFSET = 0x01B21DD213814000

Strategy = Literal["delete", "keep_latest"]


@dataclass(frozen=True, slots=True)
class CheckpointTTL:
    """A parsed `checkpointer.ttl`."""

    default_ttl_minutes: float
    strategy: Strategy = "delete"
    sweep_interval_minutes: float = DEFAULT_SWEEP_MINUTES
    sweep_limit: int = DEFAULT_SWEEP_LIMIT


def parse_ttl(section: Mapping[str, Any] | None) -> CheckpointTTL | None:
    """`checkpointer.ttl` as settings; None when absent or without `default_ttl` (nothing expires).

    Raises:
        InvalidInput: an unknown strategy or a non-positive number.
    """
    if not section or section.get("default_ttl") is None:
        if section:
            logger.warning("'checkpointer.ttl' has no 'default_ttl': no thread expires")
        return None
    strategy = section.get("strategy") or "delete"
    if strategy not in ("delete", "keep_latest"):
        raise InvalidInput(f"'checkpointer.ttl.strategy' must be 'delete' or 'keep_latest', got {strategy!r}")
    try:
        ttl = CheckpointTTL(
            default_ttl_minutes=float(section["default_ttl"]),
            strategy=cast(Strategy, strategy),
            sweep_interval_minutes=float(section.get("sweep_interval_minutes") or DEFAULT_SWEEP_MINUTES),
            sweep_limit=int(section.get("sweep_limit") or DEFAULT_SWEEP_LIMIT),
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"'checkpointer.ttl': {exc}") from exc
    if ttl.default_ttl_minutes <= 0 or ttl.sweep_interval_minutes <= 0 or ttl.sweep_limit <= 0:
        raise InvalidInput("'checkpointer.ttl' values must be positive")
    return ttl


def checkpoint_id_at(unix_seconds: float) -> str:
    """The smallest checkpoint id LangGraph could give a checkpoint written at `unix_seconds`
    (UUIDv6, clock sequence and node zero): ids below it are older."""
    timestamp = int(unix_seconds * 10_000_000) + _UUID_EPOCH_OFFSET
    value = ((timestamp >> 12) & 0xFFFFFFFFFFFF) << 80 | (timestamp & 0x0FFF) << 64
    value = (value & ~(0xF000 << 64)) | (6 << 76)  # version 6
    value = (value & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


async def sweep(saver: BaseCheckpointSaver[Any], ttl: CheckpointTTL, *, now: float | None = None) -> int:
    """One sweep: apply `ttl.strategy` to up to `ttl.sweep_limit` expired threads; how many."""
    cutoff = checkpoint_id_at((time.time() if now is None else now) - ttl.default_ttl_minutes * 60)
    expired = await expired_threads(saver, cutoff, ttl.sweep_limit)
    for thread_id in expired:
        await expire_thread(saver, thread_id, cutoff, ttl.strategy)
    return len(expired)


def _backend(saver: BaseCheckpointSaver[Any]) -> Literal["memory", "sqlite", "postgres"]:
    if isinstance(saver, InMemorySaver):
        return "memory"
    if AsyncSqliteSaver is not None and isinstance(saver, AsyncSqliteSaver):
        return "sqlite"
    if AsyncPostgresSaver is not None and isinstance(saver, AsyncPostgresSaver):
        return "postgres"
    raise InvalidInput(f"'checkpointer.ttl' is not supported for {type(saver).__name__}")


#: `?`/`%s` placeholders are put in per driver.
_EXPIRED_THREADS = (
    "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id "
    "HAVING max(checkpoint_id) < {p} ORDER BY max(checkpoint_id) LIMIT {p}"
)


async def expired_threads(saver: BaseCheckpointSaver[Any], cutoff: str, limit: int) -> list[str]:
    """Up to `limit` threads whose latest root checkpoint is older than `cutoff`, oldest first."""
    backend = _backend(saver)
    if backend == "memory":
        assert isinstance(saver, InMemorySaver)
        latest = {
            thread_id: max(namespaces[""])
            for thread_id, namespaces in saver.storage.items()
            if namespaces.get("")
        }
        return sorted((t for t, newest in latest.items() if newest < cutoff), key=latest.__getitem__)[:limit]
    if backend == "sqlite":
        await saver.setup()  # type: ignore[attr-defined]
        async with saver.lock, saver.conn.cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(_EXPIRED_THREADS.format(p="?"), (cutoff, limit))
            return [str(row[0]) for row in await cur.fetchall()]
    async with saver._cursor() as cur:  # type: ignore[attr-defined]
        await cur.execute(_EXPIRED_THREADS.format(p="%s"), (cutoff, limit))
        return [str(row["thread_id"]) for row in await cur.fetchall()]


async def expire_thread(
    saver: BaseCheckpointSaver[Any], thread_id: str, cutoff: str, strategy: Strategy
) -> None:
    """Apply `strategy` to one thread, if it is still older than `cutoff`: a run may have written
    to it since it was found expired, and then it is kept whole."""
    backend = _backend(saver)
    if backend == "memory":
        assert isinstance(saver, InMemorySaver)
        _expire_memory(saver, thread_id, cutoff, strategy)
    elif backend == "sqlite":
        await _expire_sqlite(saver, thread_id, cutoff, strategy)
    else:
        await _expire_postgres(saver, thread_id, cutoff, strategy)


def _expire_memory(saver: InMemorySaver, thread_id: str, cutoff: str, strategy: Strategy) -> None:
    namespaces = saver.storage.get(thread_id, {})
    if not namespaces.get("") or max(namespaces[""]) >= cutoff:
        return
    if strategy == "delete":
        saver.delete_thread(thread_id)
        return
    for ns, checkpoints in namespaces.items():
        latest = max(checkpoints, default=None)
        for checkpoint_id in [c for c in checkpoints if c != latest]:
            del checkpoints[checkpoint_id]
            saver.writes.pop((thread_id, ns, checkpoint_id), None)


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


def _statements(p: str, writes: str, strategy: Strategy) -> list[str]:
    """The deletes for one thread (parameters: thread id, thread id, cutoff; then thread id),
    writes last: they only drop writes whose checkpoint is gone."""
    still = _STILL_EXPIRED.format(p=p)
    first = f"DELETE FROM checkpoints WHERE thread_id = {p} AND {still}"
    if strategy == "keep_latest":
        first += f" AND {_NOT_LATEST}"
    return [first, _ORPHANED_WRITES.format(p=p, writes=writes)]


async def _expire_sqlite(saver: Any, thread_id: str, cutoff: str, strategy: Strategy) -> None:
    checkpoints, writes = _statements("?", "writes", strategy)
    async with saver.lock, saver.conn.cursor() as cur:
        # An immediate transaction: other processes' writes wait for it, so the age re-checked by
        # the delete is the age when it deletes.
        await cur.execute("BEGIN IMMEDIATE")
        try:
            await cur.execute(checkpoints, (thread_id, thread_id, cutoff))
            await cur.execute(writes, (thread_id,))
        except BaseException:
            await cur.execute("ROLLBACK")
            raise
        await cur.execute("COMMIT")


async def _expire_postgres(saver: Any, thread_id: str, cutoff: str, strategy: Strategy) -> None:
    checkpoints, writes = _statements("%s", "checkpoint_writes", strategy)
    async with saver._cursor() as cur:
        # Channel values are blobs keyed by version, shared between checkpoints. A blob may go
        # once no remaining checkpoint refers to it, and only up to the newest version the old
        # checkpoints knew: a run writing to the thread right now writes newer versions before
        # the checkpoint that refers to them.
        await cur.execute(
            "SELECT c.checkpoint_ns, v.key AS channel, max(v.value) AS version FROM checkpoints c, "
            "jsonb_each_text(c.checkpoint -> 'channel_versions') v WHERE c.thread_id = %s "
            "AND c.checkpoint_id < %s GROUP BY c.checkpoint_ns, v.key",
            (thread_id, cutoff),
        )
        known = [(row["checkpoint_ns"], row["channel"], row["version"]) for row in await cur.fetchall()]
        await cur.execute(checkpoints, (thread_id, thread_id, cutoff))
        await cur.execute(writes, (thread_id,))
        for ns, channel, version in known:
            await cur.execute(
                "DELETE FROM checkpoint_blobs b WHERE thread_id = %s AND checkpoint_ns = %s "
                "AND channel = %s AND version <= %s AND NOT EXISTS (SELECT 1 FROM checkpoints c "
                "WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns "
                "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
                (thread_id, ns, channel, version),
            )


@contextlib.asynccontextmanager
async def sweeping(saver: BaseCheckpointSaver[Any], section: Mapping[str, Any] | None) -> AsyncIterator[None]:
    """Sweep expired threads every `sweep_interval_minutes` while the context is open (nothing
    without a `checkpointer.ttl`). Every process sweeps; the deletes are idempotent.

    Raises:
        InvalidInput: the section is invalid, or the saver has no TTL support.
    """
    ttl = parse_ttl(section)
    if ttl is None:
        yield
        return
    _backend(saver)  # refuses a saver it cannot sweep, at start
    logger.info(
        "checkpointer TTL: %s threads idle for %g min, every %g min",
        ttl.strategy,
        ttl.default_ttl_minutes,
        ttl.sweep_interval_minutes,
    )
    task = asyncio.create_task(_sweep_loop(saver, ttl), name="checkpoint_ttl_sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sweep_loop(saver: BaseCheckpointSaver[Any], ttl: CheckpointTTL) -> None:
    while True:
        await asyncio.sleep(ttl.sweep_interval_minutes * 60)
        try:
            swept = await sweep(saver, ttl)
        except Exception:
            logger.exception("checkpoint TTL sweep failed; next one in %g min", ttl.sweep_interval_minutes)
            continue
        if swept:
            logger.info(
                "checkpointer TTL: %s %d expired threads",
                "deleted the checkpoints of" if ttl.strategy == "delete" else "pruned",
                swept,
                extra={"action": "checkpoint_ttl_sweep"},
            )
