"""The `Schedule` protocol: reading cron expressions, injected so the core stays free of parsers.

The implementation (croniter) lives with the scheduler in `runplane.worker.scheduler`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Schedule(Protocol):
    """Cron expressions: validation and the next slot."""

    def check(self, expression: str, timezone: str | None) -> None:
        """Raise `InvalidInput` (with a message a person can act on) for a bad expression or zone."""
        ...

    def next_after(self, expression: str, timezone: str | None, after: datetime) -> datetime:
        """The first slot strictly after `after`, as a UTC instant (the expression is read in
        `timezone`, UTC when None)."""
        ...


#: Channel on which a created, changed or deleted cron wakes schedulers (a hint: they also re-read
#: the next slot on their own).
CRONS_CHANNEL = "runplane:crons"
