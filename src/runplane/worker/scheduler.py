"""The cron scheduler: fires due cron slots as ordinary runs, in any number of processes at once.

Between slots it sleeps until the earliest next slot in the database, or until a cron changes (a
hint on `CRONS_CHANNEL`), in `worker.wakeups.run_woken`'s loop.

Cron expressions are read by croniter: five fields, or six where the last one is seconds
(`* * * * * */5`: every five seconds), in the cron's IANA time zone (UTC when none).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterError, croniter

from runplane.core.errors import InvalidInput
from runplane.core.manager import RunManager
from runplane.core.schedule import CRONS_CHANNEL
from runplane.worker.wakeups import run_woken, seconds_until

logger = logging.getLogger(__name__)


def _zone(timezone: str | None) -> ZoneInfo | None:
    if timezone is None:
        return None
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"Invalid timezone: '{timezone}'. Use IANA timezone format (e.g. 'America/New_York')."
        ) from None


class CroniterSchedule:
    """`core.schedule.Schedule` with croniter (the library LangGraph's server uses)."""

    def check(self, expression: str, timezone: str | None) -> None:
        _zone(timezone)
        try:
            valid = croniter.is_valid(expression)
        except (CroniterError, ValueError, TypeError):
            valid = False
        if not valid:
            raise InvalidInput(
                f"Invalid cron schedule: '{expression}'. Reason: Invalid cron schedule. Ensure the "
                "schedule uses the standard cron format (minute hour day_of_month month day_of_week). "
                "Example: '*/5 * * * *' for every 5 minutes."
            )

    def next_after(self, expression: str, timezone: str | None, after: datetime) -> datetime:
        zone = _zone(timezone)
        base = after.astimezone(zone) if zone is not None else after.astimezone(UTC)
        try:
            slot = croniter(expression, base).get_next(datetime)
        except (CroniterBadCronError, CroniterError, ValueError) as exc:
            raise InvalidInput(f"Invalid cron schedule: '{expression}': {exc}") from None
        assert isinstance(slot, datetime)
        return slot.astimezone(UTC)


class Scheduler:
    """Fires due cron slots through `RunManager.fire_due_crons`.

    Args:
        manager: the run manager (its schedule reads the expressions).
        max_sleep: longest sleep without a hint (see the module doc).
    """

    def __init__(self, manager: RunManager, *, max_sleep: float = 60.0) -> None:
        self.manager = manager
        self.max_sleep = max_sleep
        self.fired = self.errors = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Scheduler fired={self.fired} errors={self.errors}>"

    async def start(self) -> None:
        """Start in the background; returns once it listens for cron changes."""
        listening = asyncio.Event()
        self._task = asyncio.create_task(self._loop(listening), name="runplane-cron-scheduler")
        await listening.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        """Fire what is due now (burst mode); returns how many runs were created."""
        try:
            fired = len(await self.manager.fire_due_crons())
        except Exception:
            self.errors += 1
            logger.exception("firing due crons failed", extra={"action": "cron_fire"})
            return 0
        self.fired += fired
        return fired

    async def _loop(self, listening: asyncio.Event) -> None:
        await run_woken(
            self.manager,
            CRONS_CHANNEL,
            listening=listening,
            wake=self._wake,
            step=self._fire_due,
            sleep_seconds=self._sleep_seconds,
        )

    async def _fire_due(self) -> bool:
        await self.run_once()
        return False  # a slot fired now is followed by the next one's sleep

    async def _sleep_seconds(self) -> float:
        return await seconds_until(
            self.manager.next_cron_slot,
            self.manager.clock,
            self.max_sleep,
            failure="reading the next cron slot failed",
            action="cron_fire",
        )
