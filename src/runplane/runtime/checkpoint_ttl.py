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
written to is kept. The statements are each saver adapter's (`runtime/checkpointer/`).
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

from runplane.core.errors import InvalidInput
from runplane.runtime.checkpointer import PublicSaverAdapter, adapter_for

logger = logging.getLogger(__name__)

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


async def expired_threads(saver: BaseCheckpointSaver[Any], cutoff: str, limit: int) -> list[str]:
    """Up to `limit` threads whose latest root checkpoint is older than `cutoff`, oldest first."""
    return await adapter_for(saver).expired_threads(cutoff, limit)


async def expire_thread(
    saver: BaseCheckpointSaver[Any], thread_id: str, cutoff: str, strategy: Strategy
) -> None:
    """Apply `strategy` to one thread, if it is still older than `cutoff`: a run may have written
    to it since it was found expired, and then it is kept whole."""
    await adapter_for(saver).expire_thread(thread_id, cutoff, strategy)


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
    if isinstance(adapter_for(saver), PublicSaverAdapter):  # refuses a saver it cannot sweep, at start
        raise InvalidInput(f"'checkpointer.ttl' is not supported for {type(saver).__name__}")
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
