"""Helpers for testing code that uses runplane: a clock you move by hand, an in-memory manager, and
an in-memory runtime whose worker runs only when told (burst mode).

    async with runplane.testing.memory_runtime({"agent": graph}) as rp:
        run = await rp.runs.create(thread_id, "agent", input=..., if_not_exists="create")
        await rp.run_until_idle()  # executes every queued run, then returns
        assert (await rp.runs.get(run.run_id)).status == "success"
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from runplane.core.manager import ManagerSettings, RunManager
from runplane.embedded import Runplane, open
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.worker.scheduler import CroniterSchedule


class FakeClock:
    """A clock that only moves when told, so lease expiry is tested without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def memory_manager(*, clock: FakeClock | None = None, settings: ManagerSettings | None = None) -> RunManager:
    """A `RunManager` over the in-memory store and bus, with crons (croniter schedules)."""
    return RunManager(
        InMemoryStore(clock=clock), InMemoryBus(), clock=clock, settings=settings, schedule=CroniterSchedule()
    )


def memory_runtime(
    graphs: Mapping[str, Any],
    *,
    clock: FakeClock | None = None,
    burst: bool = True,
    workers: int = 4,
    lease_seconds: float = 30.0,
) -> Runplane:
    """The whole runtime in memory (store, bus, checkpointer, LangGraph store), composed as
    `runplane.open` composes it, for a host application's tests. Open it with `async with`.

    Args:
        graphs: graph id -> compiled graph, `StateGraph` or factory.
        clock: the store's and manager's time (leases, `after_seconds`); the wall clock when None.
        burst: the worker runs only inside `await rp.run_until_idle()`, so a test decides when runs
            execute (False: it runs in the background, as in production).
        workers: runs executed at once.
        lease_seconds: claim duration without a heartbeat.
    """
    return open(
        "memory://",
        graphs=graphs,
        clock=clock,
        burst=burst,
        workers=workers,
        lease_seconds=lease_seconds,
    )
