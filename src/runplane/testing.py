"""Helpers for testing code that uses runplane: a clock you move by hand, an in-memory manager."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from runplane.core.manager import ManagerSettings, RunManager
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore


class FakeClock:
    """A clock that only moves when told, so lease expiry is tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def memory_manager(*, clock: FakeClock | None = None, settings: ManagerSettings | None = None) -> RunManager:
    """A `RunManager` over the in-memory store and bus."""
    return RunManager(InMemoryStore(clock=clock), InMemoryBus(), clock=clock, settings=settings)
