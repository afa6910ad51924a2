"""`RunManager`'s worker side: what a worker and the webhook dispatcher do with runs they hold.

A mixin of `RunManager`, like `core.resources`. Every write is fenced by the run's `attempt` (see
`core.store`), and every hint a worker sleeps on comes from here, so the worker never reaches the
store or the bus itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from runplane.core.errors import LeaseLost, NotFound
from runplane.core.events import WAKEUP_CHANNEL, EventBus, cancel_channel
from runplane.core.models import (
    CancelAction,
    Claimed,
    Finished,
    Outcome,
    QueueStats,
    Run,
    TokenUsage,
    WebhookDelivery,
)
from runplane.core.observe import Observer

if TYPE_CHECKING:
    from runplane.core.ended_here import EndedHere
    from runplane.core.manager import ManagerSettings
    from runplane.core.store import Store

logger = logging.getLogger(__name__)


class TakesRunsAtAdmission(Protocol):
    """A worker in this process that takes runs at their admission (`RunManager.take_runs_here`).

    The admission claims a run for it when the run can start at once, in the admission's own
    transaction: the claim it would make a moment later, after the wake-up hint, costs nothing more
    (issues 14 and 18: one transaction, one round trip and a hop through the loop fewer per run).
    """

    worker_id: str

    async def reserve_slot(self) -> bool:
        """Take a free slot for a run about to be admitted; False when none is free (or the
        worker is stopping): the run is admitted pending, for whichever worker claims it."""
        ...

    def release_slot(self) -> None:
        """Give back a slot `reserve_slot` took: the admission did not claim the run."""
        ...

    def start_claimed(self, run: Run) -> bool:
        """Execute `run`, claimed for this worker by its admission, in the reserved slot. False
        when the worker stopped meanwhile (the slot is given back): the caller hands the run back."""
        ...


class WorkerUseCases:
    """Claim, renew, fence, publish, finish and recover runs; deliver webhooks; mixed into `RunManager`."""

    if TYPE_CHECKING:
        store: Store
        bus: EventBus
        settings: ManagerSettings
        observer: Observer
        ended_here: EndedHere
        taking_runs: TakesRunsAtAdmission | None

        async def _end(self, run_id: str) -> None: ...

        async def _hint_webhook(self, run: Run) -> None: ...

    def take_runs_here(self, worker: TakesRunsAtAdmission | None) -> None:
        """Have this manager's admissions claim runs for `worker` while it has free slots (None:
        stop). A worker calls it as it starts and as it stops."""
        self.taking_runs = worker

    def new_run_hints(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Hints that some run was admitted or handed back (any thread): a worker claims when one
        comes, a follower of a thread's runs re-reads them. Hints can be lost: listen first, then
        read the store, and poll now and then."""
        return self.bus.listen(WAKEUP_CHANNEL)

    def cancel_hints(self, worker_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Hints that a run worker `worker_id` holds got a cancel request (each hint: the run's
        id). The request itself is durable: a worker that missed the hint sees it at its next
        renewal."""
        return self.bus.listen(cancel_channel(worker_id))

    async def claim(self, worker_id: str) -> Run | None:
        return (await self.claim_and_look(worker_id)).run

    async def claim_and_look(self, worker_id: str) -> Claimed:
        """Claim the next claimable run, and say whether another one is claimable now
        (`Claimed.more`): when not, the worker waits for a wake-up hint instead of claiming again."""
        claimed = await self.store.claim_and_look(worker_id, self.settings.lease_seconds)
        if claimed.run is not None:
            self.observer.run_started(claimed.run)
        return claimed

    async def renew(self, run: Run, worker_id: str) -> CancelAction | None:
        return await self.store.renew_lease(run.run_id, run.attempt, worker_id, self.settings.lease_seconds)

    async def record_progress(
        self, run: Run, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        await self.store.record_progress(run.run_id, run.attempt, model_name=model_name, usage=usage)

    def hold(self, run: Run, *, early: bool = False) -> AbstractAsyncContextManager[None]:
        """Fence a checkpoint write of the attempt `run` (see `Store.hold_attempt`); `early`: it
        may be acknowledged before it commits (`writes_committed` says when it has)."""
        return self.store.hold_attempt(run.run_id, run.attempt, self.settings.lease_seconds, early=early)

    async def writes_committed(self, run: Run, *, for_finish: bool = False) -> BaseException | None:
        """Wait for the attempt's writes acknowledged early; the first failure, if one failed.
        With `for_finish`, those not yet begun may be left to the finish (`Store.writes_committed`)."""
        return await self.store.writes_committed(run.run_id, run.attempt, for_finish=for_finish)

    async def publish(self, run: Run, event: str, data: bytes) -> str:
        """Append an event to the run's stream now; returns its id."""
        event_id = await self.bus.publish(run.run_id, event, data)
        self.observer.event_published(run, event)
        return event_id

    async def enqueue(self, run: Run, event: str, data: bytes) -> None:
        """Queue an event of the run's stream, as a worker does: a shared bus writes it with the
        others queued meanwhile (`EventBus.enqueue`); `finish` and `release` flush the queue first."""
        await self.bus.enqueue(run.run_id, event, data)
        self.observer.event_published(run, event)

    async def finish(self, run: Run, outcome: Outcome) -> Run:
        """`finish_and_look`, for the run only."""
        return (await self.finish_and_look(run, outcome)).run

    async def finish_and_look(self, run: Run, outcome: Outcome) -> Finished:
        """End a run the worker holds. The status is durable before the stream ends and joiners
        are woken, so whoever reacts to either reads the final status. Says whether the thread's
        next run became claimable (`Finished.next_claimable`): no hint announces it.

        Raises:
            LeaseLost, CancelRequested: see `Store.finish_run`.
        """
        # Every event before the status: a joiner that reads the status finds them on the bus.
        await self.bus.flush(run.run_id)
        finished = await self.store.finish_and_look(run.run_id, run.attempt, outcome)
        self.observer.run_finished(finished.run)
        self.ended_here.ended(finished.run, outcome)  # before the "done" hint its waiters hear
        await self._end(run.run_id)
        await self._hint_webhook(finished.run)
        return finished

    async def discard(self, run: Run) -> None:
        """Delete a run after rolling its thread back (cancel `rollback`)."""
        discarded = await self.store.discard_run(run.run_id, run.attempt)
        self.observer.run_discarded(discarded)
        await self._end(run.run_id)

    async def release(self, run: Run) -> Run:
        """Hand a run back to the queue (graceful shutdown); another worker resumes it."""
        await self.bus.flush(run.run_id)  # this attempt's events before the next attempt's
        released = await self.store.release_run(run.run_id, run.attempt)
        await self.bus.notify(WAKEUP_CHANNEL, run.run_id)
        return released

    async def recover_expired(self) -> list[Run]:
        """Settle every run whose worker stopped renewing its lease; returns what it changed.

        Safe to call from every worker at once: each settle is conditional on the attempt, so only
        one caller moves a given run.
        """
        recovered: list[Run] = []
        for run in await self.store.expired_runs():
            try:
                settled = await self.store.recover_run(run.run_id, run.attempt, self.settings.max_attempts)
            except (LeaseLost, NotFound):
                continue
            logger.warning(
                "recovered run %s (attempt %d) -> %s",
                run.run_id,
                run.attempt,
                settled.status,
                extra={"action": "recover", "run_id": run.run_id},
            )
            recovered.append(settled)
            self.observer.lease_recovered(settled)
            if settled.is_terminal:
                self.observer.run_finished(settled)
            if settled.is_terminal:
                await self._end(run.run_id)
                await self._hint_webhook(settled)
            # Back in the queue, or ended and so no longer holding back its thread's next run:
            # either may be claimable now, and no worker would look before its fallback poll.
            await self.bus.notify(WAKEUP_CHANNEL, run.run_id)
        return recovered

    async def queue_stats(self) -> QueueStats:
        """Pending and running runs and busy workers, over every owner, from the database (so every
        process reports the same numbers)."""
        return await self.store.queue_stats()

    # -- webhooks -------------------------------------------------------------------------------

    async def claim_webhooks(self, limit: int = 20) -> list[WebhookDelivery]:
        return await self.store.claim_webhooks(self.settings.webhook_lease_seconds, limit)

    async def webhook_delivered(self, delivery: WebhookDelivery) -> None:
        await self.store.webhook_delivered(delivery.delivery_id)
        self.observer.webhook_delivered(True)

    async def webhook_failed(self, delivery: WebhookDelivery, error: str, retry_at: datetime | None) -> None:
        """Record a failed delivery attempt: retried at `retry_at`, or given up when None."""
        await self.store.webhook_failed(delivery.delivery_id, error, retry_at)
        self.observer.webhook_delivered(False)

    async def next_webhook_due(self) -> datetime | None:
        return await self.store.next_webhook_due()

    async def list_webhooks(self, limit: int = 100) -> list[WebhookDelivery]:
        return await self.store.list_webhooks(limit)

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Hints on `channel` (`CRONS_CHANNEL`, `WEBHOOKS_CHANNEL`): a background loop sleeps on
        them instead of polling. Registration is complete when the context is entered."""
        return self.bus.listen(channel)
