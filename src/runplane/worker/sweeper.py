"""`Sweeper`: deletes what has outlived its TTL, in the background of every worker process.

Threads whose `ttl` ran out go with their runs (the store re-checks expiry in the deleting
transaction, so a thread that got a run meanwhile stays) and then their checkpoints; long-term
store items whose TTL ran out go too. Every process may sweep at once: each deletion is
conditional, so a thread is deleted once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

from runplane.core.manager import RunManager

logger = logging.getLogger(__name__)

#: Threads deleted per store round trip.
BATCH = 100


class CheckpointDeleter(Protocol):
    async def delete_thread(self, thread_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Swept:
    threads: int = 0
    items: int = 0


class Sweeper:
    """Sweeps every `interval_seconds` until stopped.

    Args:
        manager: the run manager (threads, runs and the long-term store).
        checkpoints: deletes a swept thread's checkpoints (the graph runtime).
        interval_seconds: time between sweeps.
    """

    def __init__(
        self, manager: RunManager, checkpoints: CheckpointDeleter, *, interval_seconds: float = 60.0
    ) -> None:
        self.manager = manager
        self.checkpoints = checkpoints
        self.interval_seconds = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self.swept = Swept()

    def __repr__(self) -> str:
        return (
            f"<Sweeper every {self.interval_seconds}s threads={self.swept.threads} items={self.swept.items}>"
        )

    async def sweep_once(self) -> Swept:
        """One full sweep: expired threads in batches until none is left, then expired items."""
        threads = 0
        while True:
            deleted = await self.manager.sweep_expired_threads(BATCH)
            for thread in deleted:
                # The record went first: no new run can write checkpoints to this thread.
                await self.checkpoints.delete_thread(thread.thread_id)
            threads += len(deleted)
            if len(deleted) < BATCH:
                break
        items = await self.manager.sweep_items()
        if threads or items:
            logger.info(
                "swept %d expired threads and %d expired store items",
                threads,
                items,
                extra={"action": "sweep"},
            )
        self.swept = Swept(self.swept.threads + threads, self.swept.items + items)
        return Swept(threads, items)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:  # a failed sweep is retried at the next interval
                logger.exception("TTL sweep failed", extra={"action": "sweep"})
            await asyncio.sleep(self.interval_seconds)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="runplane-sweeper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
