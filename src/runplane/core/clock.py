"""Time, injected: stores and workers read the clock through this seam so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of timezone-aware UTC instants."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def lease_deadline(clock: Clock, lease_seconds: float) -> datetime:
    """When a lease taken (or renewed) now expires."""
    return clock.now() + timedelta(seconds=lease_seconds)
