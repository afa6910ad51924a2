"""The wake-up loop of the background services that sleep between due times (the cron scheduler, the
webhook dispatcher): do what is due, then sleep until the next due time the database knows, or until
a hint on the service's bus channel (or a local `wake`) says something changed. They never poll the
table on a fixed short period; `max_sleep` bounds the sleep only so that a change made where hints do
not reach (SQLite without a shared bus) is seen within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

from runplane.core.clock import Clock
from runplane.core.manager import RunManager

logger = logging.getLogger(__name__)

#: The sleep after the next due time could not be read (the database is away): short, to retry soon.
RETRY_SECONDS = 5.0


async def run_woken(
    manager: RunManager,
    channel: str,
    *,
    listening: asyncio.Event,
    wake: asyncio.Event,
    step: Callable[[], Awaitable[bool]],
    sleep_seconds: Callable[[], Awaitable[float]],
) -> None:
    """Run `step` until cancelled: at once, then whenever a hint arrives on `channel`, `wake` is set,
    or `sleep_seconds()` ran out. `step` returns True when more may be due now (no sleep then).

    `listening` is set once hints are received, so a caller that awaits it misses none.
    """
    async with manager.listen(channel) as hints:
        pump = asyncio.create_task(_pump(hints, wake))
        listening.set()
        try:
            while True:
                wake.clear()  # before the step: a change made meanwhile wakes us again
                if await step():
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(await sleep_seconds()):
                        await wake.wait()
        finally:
            pump.cancel()


async def _pump(hints: AsyncIterator[str], wake: asyncio.Event) -> None:
    async for _ in hints:
        wake.set()


async def seconds_until(
    next_due: Callable[[], Awaitable[datetime | None]],
    clock: Clock,
    max_sleep: float,
    *,
    failure: str,
    action: str,
) -> float:
    """How long to sleep until `next_due()` (None: nothing is scheduled), at most `max_sleep`. When
    it cannot be read, `failure` is logged and the sleep is short (`RETRY_SECONDS`)."""
    try:
        due = await next_due()
    except Exception:
        logger.exception(failure, extra={"action": action})
        return min(RETRY_SECONDS, max_sleep)
    if due is None:
        return max_sleep
    return min(max((due - clock.now()).total_seconds(), 0.0), max_sleep)
