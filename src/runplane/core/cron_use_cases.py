"""`RunManager`'s cron use-cases: store, change and fire schedules; a mixin, like `core.resources`.

A cron fires as an ordinary run (`RunManager.create_run`), admitted in the same store transaction
that moves the cron past its slot, so a slot fires once whatever the number of schedulers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runplane.core.clock import Clock
from runplane.core.errors import Conflict, InvalidInput, NotFound, SlotTaken, ThreadBusy
from runplane.core.events import EventBus
from runplane.core.lifecycle import cron_next_slot_after_fire
from runplane.core.models import (
    MULTITASK_STRATEGIES,
    SINGLE_USER,
    Cron,
    CronChanges,
    CronFilter,
    CronFire,
    IfNotExists,
    Json,
    MultitaskStrategy,
    NewCron,
    Run,
)
from runplane.core.observe import Observer
from runplane.core.pages import check_page, new_id
from runplane.core.run_kwargs import RunKwargs
from runplane.core.schedule import CRONS_CHANNEL, Schedule

if TYPE_CHECKING:
    from runplane.core.store import Store

logger = logging.getLogger(__name__)


class CronUseCases:
    """Crons: create, read, change, delete and fire them; mixed into `RunManager`."""

    if TYPE_CHECKING:
        store: Store
        bus: EventBus
        clock: Clock
        observer: Observer
        schedule: Schedule | None

        async def check_webhook(self, url: object) -> None: ...

        async def create_run(
            self,
            thread_id: str,
            assistant_id: str,
            owner: str = SINGLE_USER,
            *,
            kwargs: RunKwargs | Mapping[str, Any] | None = None,
            metadata: Json | None = None,
            multitask_strategy: MultitaskStrategy = "enqueue",
            if_not_exists: IfNotExists = "reject",
            after_seconds: float | None = None,
            idempotency_key: str | None = None,
            run_id: str | None = None,
            thread_config: Json | None = None,
            thread_metadata: Json | None = None,
            cron: CronFire | None = None,
            thread_metadata_update: Json | None = None,
        ) -> Run: ...

    def _schedule(self) -> Schedule:
        if self.schedule is None:
            raise InvalidInput("crons are not available: no schedule parser is configured")
        return self.schedule

    async def create_cron(self, new: NewCron) -> Cron:
        """Store a cron; its first slot is the first one after now.

        Raises:
            InvalidInput: bad expression, time zone or webhook URL.
            NotFound: a thread cron on an unknown thread.
        """
        schedule = self._schedule()
        schedule.check(new.schedule, new.timezone)
        if new.multitask_strategy not in MULTITASK_STRATEGIES:
            raise InvalidInput(f"unknown multitask_strategy {new.multitask_strategy!r}")
        await self.check_webhook(RunKwargs.from_json(new.kwargs).webhook)
        first = schedule.next_after(new.schedule, new.timezone, self.clock.now())
        cron = await self.store.create_cron(replace(new, next_run_date=first))
        await self.bus.notify(CRONS_CHANNEL, cron.cron_id)
        return cron

    async def get_cron(self, cron_id: str, owner: str = SINGLE_USER) -> Cron:
        return await self.store.get_cron(cron_id, owner)

    async def update_cron(self, cron_id: str, changes: CronChanges, owner: str = SINGLE_USER) -> Cron:
        """Change a cron. A new schedule or time zone, or re-enabling it, starts it again from the
        first slot after now (a re-enabled cron does not fire the slots it missed while disabled)."""
        schedule = self._schedule()
        current = await self.store.get_cron(cron_id, owner)
        expression = changes.schedule if changes.schedule is not None else current.schedule
        timezone = changes.timezone if changes.timezone is not None else current.timezone
        schedule.check(expression, timezone)
        if changes.kwargs is not None:
            await self.check_webhook(RunKwargs.from_json(changes.kwargs).webhook)
        if changes.schedule is not None or changes.timezone is not None or changes.enabled is True:
            changes = replace(
                changes,
                next_run_date=schedule.next_after(expression, timezone, self.clock.now()),
                set_next_run_date=True,
            )
        cron = await self.store.update_cron(cron_id, owner, changes)
        await self.bus.notify(CRONS_CHANNEL, cron_id)
        return cron

    async def delete_cron(self, cron_id: str, owner: str = SINGLE_USER) -> None:
        await self.store.delete_cron(cron_id, owner)
        await self.bus.notify(CRONS_CHANNEL, cron_id)

    async def search_crons(self, owner: str = SINGLE_USER, filter: CronFilter | None = None) -> list[Cron]:
        filter = filter or CronFilter()
        check_page(filter.limit, filter.offset)
        return await self.store.search_crons(owner, filter)

    async def count_crons(self, owner: str = SINGLE_USER, filter: CronFilter | None = None) -> int:
        return await self.store.count_crons(owner, filter or CronFilter())

    async def next_cron_slot(self) -> datetime | None:
        """When a scheduler has something to do next (None: no enabled cron)."""
        return await self.store.next_cron_slot()

    async def fire_due_crons(self, limit: int = 100) -> list[Run]:
        """Fire every due cron slot once, as ordinary runs (admission, strategy, owner, webhook).

        Safe from any number of schedulers at once: each run is admitted only together with the
        claim of its slot (`Store.create_run`), so a slot another scheduler fired is skipped. A
        cron that missed several slots fires once, then waits for the first slot after now.
        """
        schedule = self._schedule()
        now = self.clock.now()
        fired: list[Run] = []
        for cron in await self.store.due_crons(now, limit):
            assert cron.next_run_date is not None
            after = schedule.next_after(cron.schedule, cron.timezone, now)
            slot = CronFire(cron.cron_id, cron.next_run_date, cron_next_slot_after_fire(after, cron.end_time))
            try:
                fired.append(await self._fire(cron, slot))
            except SlotTaken:
                continue  # another scheduler fired it
            except (ThreadBusy, NotFound, Conflict, InvalidInput) as exc:
                # The run cannot be admitted (a `reject` cron on a busy thread, a deleted thread):
                # this slot is skipped, the next one will try again.
                await self.store.skip_cron_slot(slot)
                logger.warning(
                    "cron %s: slot %s skipped: %s",
                    cron.cron_id,
                    slot.slot.isoformat(),
                    exc.message,
                    extra={"action": "cron_skip", "cron_id": cron.cron_id},
                )
        return fired

    async def _fire(self, cron: Cron, slot: CronFire) -> Run:
        kwargs = RunKwargs.from_json(cron.kwargs)
        graph = {"graph_id": kwargs.graph_id, "assistant_id": cron.assistant_id}
        run = await self.create_run(
            cron.thread_id or new_id(),
            cron.assistant_id,
            cron.owner,
            kwargs=kwargs,
            metadata={**graph, **cron.metadata, "cron_id": cron.cron_id},
            multitask_strategy=cron.multitask_strategy,
            if_not_exists="reject" if cron.thread_id else "create",
            thread_metadata={**graph, **cron.metadata},
            cron=slot,
        )
        self.observer.cron_fired()
        logger.info(
            "cron %s: slot %s fired run %s",
            cron.cron_id,
            slot.slot.isoformat(),
            run.run_id,
            extra={"action": "cron_fire", "cron_id": cron.cron_id, "run_id": run.run_id},
        )
        return run
