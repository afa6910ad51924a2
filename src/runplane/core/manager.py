"""`RunManager`: the use-cases. The API and the workers call these and nothing below them.

The manager holds no per-run state: the store has the truth, the bus carries the hints. Whatever a
process remembers about a run (a stream subscription, a join) lives only as long as that call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from runplane.core.clock import Clock, SystemClock
from runplane.core.errors import Conflict, InvalidInput, LeaseLost, NotFound, SlotTaken, ThreadBusy
from runplane.core.events import WAKEUP_CHANNEL, EventBus, StreamEvent, cancel_channel, done_channel
from runplane.core.lifecycle import cron_next_slot_after_fire, webhook_url
from runplane.core.models import (
    CANCEL_ACTIONS,
    MULTITASK_STRATEGIES,
    SINGLE_USER,
    CancelAction,
    Cron,
    CronChanges,
    CronFilter,
    CronFire,
    IfNotExists,
    Json,
    MultitaskStrategy,
    NewCron,
    NewRun,
    NewThread,
    Outcome,
    QueueStats,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
    WebhookDelivery,
)
from runplane.core.observe import NullObserver, Observer
from runplane.core.resources import ResourceUseCases
from runplane.core.schedule import CRONS_CHANNEL, Schedule
from runplane.core.store import Store
from runplane.core.thread_streams import ThreadStreams
from runplane.core.webhooks import WEBHOOKS_CHANNEL, UrlGuard

logger = logging.getLogger(__name__)

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """Timing knobs of the run lifecycle."""

    #: How long a worker's claim lasts without a heartbeat.
    lease_seconds: float = 30.0
    #: Claims of one run before a dead worker's run ends `error` instead of being resumed.
    max_attempts: int = 3
    #: How often a waiter re-reads the store when no "done" hint arrives (hints can be lost).
    wait_fallback_seconds: float = 5.0
    #: How long a webhook dispatcher holds a delivery it claimed before another may retry it.
    webhook_lease_seconds: float = 60.0


def new_id() -> str:
    return str(uuid.uuid4())


def fingerprint(payload: Json) -> str:
    """A stable digest of a run request, to tell a replayed idempotency key from a reused one."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_page(limit: int, offset: int) -> None:
    if not 0 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 0 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidInput("offset must be >= 0")


class RunManager(ResourceUseCases, ThreadStreams):
    """Create, cancel, wait for and stream runs; the primitives workers execute them with.

    Args:
        store: the durable truth.
        bus: event streams and hints.
        clock: time source (a `FakeClock` in tests).
        settings: lease and retry knobs.
        observer: told what happens to runs (metrics); observes nothing when None.
        schedule: reads cron expressions (crons are refused without one).
        url_guard: refuses webhook URLs the server must not call (None: no check).
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        clock: Clock | None = None,
        settings: ManagerSettings | None = None,
        observer: Observer | None = None,
        schedule: Schedule | None = None,
        url_guard: UrlGuard | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock or SystemClock()
        self.settings = settings or ManagerSettings()
        self.observer: Observer = observer or NullObserver()
        self.schedule = schedule
        self.url_guard = url_guard

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self,
        owner: str = SINGLE_USER,
        *,
        thread_id: str | None = None,
        metadata: Json | None = None,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> Thread:
        new = NewThread(owner=owner, thread_id=thread_id, metadata=dict(metadata or {}))
        return await self.store.create_thread(new, if_exists=if_exists)

    async def get_thread(self, thread_id: str, owner: str = SINGLE_USER) -> Thread:
        return await self.store.get_thread(thread_id, owner)

    async def update_thread(self, thread_id: str, metadata: Json, owner: str = SINGLE_USER) -> Thread:
        return await self.store.update_thread(thread_id, owner, metadata)

    async def set_thread_state(
        self,
        thread_id: str,
        values: Json | None,
        interrupts: Json,
        owner: str = SINGLE_USER,
        status: ThreadStatus | None = None,
    ) -> Thread:
        return await self.store.set_thread_state(thread_id, owner, values, interrupts, status)

    async def delete_thread(self, thread_id: str, owner: str = SINGLE_USER) -> None:
        """Delete a thread and its runs. Workers still executing one of them lose their lease at
        their next write and stop; they are also told at once."""
        active = await self.store.delete_thread(thread_id, owner)
        for run in active:
            await self._end(run.run_id)
            if run.status == "running":
                await self.bus.notify(cancel_channel(run.run_id), "interrupt")

    async def search_threads(
        self, owner: str = SINGLE_USER, filter: ThreadFilter | None = None
    ) -> list[Thread]:
        filter = filter or ThreadFilter()
        _check_page(filter.limit, filter.offset)
        return await self.store.search_threads(owner, filter)

    async def count_threads(self, owner: str = SINGLE_USER, filter: ThreadFilter | None = None) -> int:
        return await self.store.count_threads(owner, filter or ThreadFilter())

    async def thread_usage(self, thread_id: str, owner: str = SINGLE_USER) -> TokenUsage:
        return await self.store.thread_usage(thread_id, owner)

    # -- runs: callers ----------------------------------------------------------------------------

    async def create_run(
        self,
        thread_id: str,
        assistant_id: str,
        owner: str = SINGLE_USER,
        *,
        kwargs: Json | None = None,
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
    ) -> Run:
        """Admit a run; it starts as soon as a worker is free and its thread is.

        `thread_config` is the run's config as its thread shows it from now on (see
        `lifecycle.thread_config_after_admission`); the store merges it when it admits the run.
        `cron` admits it for that cron slot only (see `Store.create_run`); `thread_metadata` is
        given to a thread that `if_not_exists="create"` creates; `thread_metadata_update` is merged
        into the thread's metadata by the admission itself.

        Raises:
            InvalidInput: unknown strategy or negative delay.
            NotFound: unknown thread and `if_not_exists` is "reject".
            ThreadBusy: `reject` on a busy thread.
            Conflict: idempotency key reused with another payload.
        """
        if multitask_strategy not in MULTITASK_STRATEGIES:
            raise InvalidInput(f"unknown multitask_strategy {multitask_strategy!r}")
        if if_not_exists not in ("create", "reject"):
            raise InvalidInput(f"unknown if_not_exists {if_not_exists!r}")
        if after_seconds is not None and after_seconds < 0:
            raise InvalidInput("after_seconds must be >= 0")
        kwargs = dict(kwargs or {})
        metadata = dict(metadata or {})
        await self.check_webhook(kwargs.get("webhook"))
        digest = None
        if idempotency_key is not None:
            digest = fingerprint(
                {
                    "thread_id": thread_id,
                    "assistant_id": assistant_id,
                    "kwargs": kwargs,
                    "metadata": metadata,
                    "multitask_strategy": multitask_strategy,
                    "after_seconds": after_seconds,
                }
            )
        not_before = self.clock.now() + timedelta(seconds=after_seconds) if after_seconds else None
        admission = await self.store.create_run(
            NewRun(
                run_id=run_id or new_id(),
                thread_id=thread_id,
                assistant_id=assistant_id,
                owner=owner,
                multitask_strategy=multitask_strategy,
                if_not_exists=if_not_exists,
                metadata=metadata,
                kwargs=kwargs,
                not_before=not_before,
                idempotency_key=idempotency_key,
                fingerprint=digest,
                thread_config=thread_config,
                thread_metadata=dict(thread_metadata or {}),
                cron=cron,
                thread_metadata_update=dict(thread_metadata_update or {}),
            )
        )
        if admission.replayed:
            return admission.run
        self.observer.run_created(admission.run)
        for cancelled in admission.cancelled_pending:
            await self._end(cancelled.run_id)
        for running in admission.cancel_requested:
            await self.bus.notify(cancel_channel(running.run_id), running.cancel_action or "interrupt")
        await self.bus.notify(WAKEUP_CHANNEL, admission.run.run_id)
        return admission.run

    async def get_run(self, run_id: str, owner: str = SINGLE_USER, thread_id: str | None = None) -> Run:
        return await self.store.get_run(run_id, owner, thread_id)

    async def list_runs(
        self, thread_id: str, owner: str = SINGLE_USER, filter: RunFilter | None = None
    ) -> list[Run]:
        filter = filter or RunFilter()
        _check_page(filter.limit, filter.offset)
        return await self.store.list_runs(thread_id, owner, filter)

    async def delete_run(
        self,
        run_id: str,
        owner: str = SINGLE_USER,
        thread_id: str | None = None,
        *,
        stop_running: bool = False,
    ) -> None:
        """Delete a pending or finished run; with `stop_running`, a running one too, once its
        worker stopped it (cancel `interrupt`), so that nothing keeps executing for a run that is
        gone and its thread is free again.

        Raises:
            Conflict: the run is running and `stop_running` is False.
        """
        while True:
            try:
                await self.store.delete_run(run_id, owner, thread_id)
                break
            except Conflict:
                if not stop_running:
                    raise
            # A run claimed between two attempts is stopped again: each round ends a started run.
            await self.cancel_run(run_id, owner, action="interrupt", wait=True, thread_id=thread_id)
        await self._end(run_id)

    async def cancel_run(
        self,
        run_id: str,
        owner: str = SINGLE_USER,
        *,
        action: CancelAction = "interrupt",
        wait: bool = False,
        thread_id: str | None = None,
    ) -> Run | None:
        """Cancel a run. Idempotent: cancelling a finished run returns it unchanged.

        The request is durable before anyone is told, so a worker in another process sees it at its
        next heartbeat even if the hint is lost. A running run is reported `interrupted` only after
        its worker stopped it: with `wait`, this returns the run in its terminal state (None when a
        rollback deleted it); without, the run as it is now (still `running`, with `cancel_action`).
        """
        if action not in CANCEL_ACTIONS:
            raise InvalidInput(f"unknown cancel action {action!r}")
        self.observer.cancel_requested(action)
        result = await self.store.request_cancel(run_id, owner, action, thread_id)
        if result.settled:
            await self._end(run_id)
            await self._hint_webhook(result.run)
            return None if result.deleted else result.run
        if result.run.status == "running":
            await self.bus.notify(cancel_channel(run_id), action)
        if not wait:
            return result.run
        return await self.wait_for_run(run_id, owner, thread_id=thread_id)

    async def wait_for_run(
        self,
        run_id: str,
        owner: str = SINGLE_USER,
        *,
        timeout: float | None = None,
        thread_id: str | None = None,
    ) -> Run | None:
        """Wait until the run is terminal; None when it was deleted meanwhile (rollback).

        Holds no database connection while waiting: it sleeps on the "done" hint and re-reads the
        store when the hint comes (or every `wait_fallback_seconds`, in case a hint was lost).

        Raises:
            NotFound: unknown run (at the first read).
            TimeoutError: `timeout` elapsed first.
        """
        async with asyncio.timeout(timeout):
            async with self.bus.listen(done_channel(run_id)) as hints:
                run = await self.store.get_run(run_id, owner, thread_id)
                # One pending `anext` is kept across fallback timeouts: cancelling it would close an
                # async-generator `hints`, and every later `anext` would raise StopAsyncIteration.
                hint: asyncio.Future[str] | None = None
                try:
                    while not run.is_terminal:
                        if hint is None:
                            hint = asyncio.ensure_future(anext(hints))
                        done, _ = await asyncio.wait({hint}, timeout=self.settings.wait_fallback_seconds)
                        if done and hint.exception() is None:
                            hint = None
                        elif done:  # the hints ended (bus closing): poll the store instead
                            await asyncio.sleep(self.settings.wait_fallback_seconds)
                        try:
                            run = await self.store.get_run(run_id, owner, thread_id)
                        except NotFound:
                            return None
                    return run
                finally:
                    if hint is not None and not hint.done():
                        hint.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await hint

    async def stream_run(
        self,
        run_id: str,
        owner: str = SINGLE_USER,
        *,
        last_event_id: str | None = None,
        thread_id: str | None = None,
        from_now: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """The run's output events after `last_event_id`, live until the run ends.

        With `from_now` (and no `last_event_id`), only the events published from now on, as
        LangGraph's server joins a stream without Last-Event-ID; a run that has not started yet
        still streams from its first event, so its caller sees it whole.

        Ownership is checked before the first event. A run that ended long ago (its stream expired
        from the bus) yields nothing; the caller reads the final state from the thread.
        """
        run = await self.store.get_run(run_id, owner, thread_id)
        if run.is_terminal:
            # This bus may never have seen the run (it ended in another process, or before a
            # restart): without an end mark the subscription would wait forever. Ending an ended
            # stream is a no-op, so this is safe when the bus did see it.
            await self.bus.end_stream(run_id)
        if from_now and last_event_id is None and run.status != "pending":
            # Read before subscribing: whatever is published in between is after it, so kept.
            last_event_id = await self.bus.latest_event_id(run_id)
        return self.bus.subscribe(run_id, last_event_id)

    # -- runs: workers ----------------------------------------------------------------------------

    async def claim(self, worker_id: str) -> Run | None:
        run = await self.store.claim_run(worker_id, self.settings.lease_seconds)
        if run is not None:
            self.observer.run_started(run)
        return run

    async def renew(self, run: Run, worker_id: str) -> CancelAction | None:
        return await self.store.renew_lease(run.run_id, run.attempt, worker_id, self.settings.lease_seconds)

    async def record_progress(
        self, run: Run, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        await self.store.record_progress(run.run_id, run.attempt, model_name=model_name, usage=usage)

    def hold(self, run: Run) -> AbstractAsyncContextManager[None]:
        """Fence a checkpoint write of the attempt `run` (see `Store.hold_attempt`)."""
        return self.store.hold_attempt(run.run_id, run.attempt, self.settings.lease_seconds)

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
        """End a run the worker holds. The status is durable before the stream ends and joiners
        are woken, so whoever reacts to either reads the final status.

        Raises:
            LeaseLost, CancelRequested: see `Store.finish_run`.
        """
        # Every event before the status: a joiner that reads the status finds them on the bus.
        await self.bus.flush(run.run_id)
        finished = await self.store.finish_run(run.run_id, run.attempt, outcome)
        self.observer.run_finished(finished)
        await self._end(run.run_id)
        await self._hint_webhook(finished)
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
            else:
                await self.bus.notify(WAKEUP_CHANNEL, run.run_id)
        return recovered

    async def queue_stats(self) -> QueueStats:
        """Pending and running runs and busy workers, over every owner, from the database (so every
        process reports the same numbers)."""
        return await self.store.queue_stats()

    async def _end(self, run_id: str) -> None:
        await self.bus.end_stream(run_id)
        await self._announce_done(run_id)

    async def _announce_done(self, run_id: str) -> None:
        await self.bus.notify(done_channel(run_id), run_id)

    async def _hint_webhook(self, run: Run) -> None:
        # The outbox row is already committed with the status; this only saves dispatchers a wait.
        if webhook_url(run) is not None:
            await self.bus.notify(WEBHOOKS_CHANNEL, run.run_id)

    # -- crons ----------------------------------------------------------------------------------

    def _schedule(self) -> Schedule:
        if self.schedule is None:
            raise InvalidInput("crons are not available: no schedule parser is configured")
        return self.schedule

    async def check_webhook(self, url: object) -> None:
        """Refuse (`InvalidInput`) a webhook URL the server must not call."""
        if url is None or self.url_guard is None:
            return
        if not isinstance(url, str):
            raise InvalidInput("webhook must be a URL")
        await self.url_guard.check(url)

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
        await self.check_webhook(new.kwargs.get("webhook"))
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
            await self.check_webhook(changes.kwargs.get("webhook"))
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
        _check_page(filter.limit, filter.offset)
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
        graph = {"graph_id": cron.kwargs.get("graph_id"), "assistant_id": cron.assistant_id}
        run = await self.create_run(
            cron.thread_id or new_id(),
            cron.assistant_id,
            cron.owner,
            kwargs=cron.kwargs,
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

    # -- runs: protocol adapters (MCP, A2A, thread streaming) --------------------------------------

    def follow_new_run(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        """The events of a run the caller has just created (its ownership is known).

        Unlike `stream_run` this does not re-read the run first: a fast temporary run may already
        be gone with its thread, while its events stay on the bus for the retention period.
        """
        return self.bus.subscribe(run_id, last_event_id)

    def new_run_hints(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Hints that some run was admitted (any thread): a follower of a thread's runs re-reads
        them when one comes. Hints can be lost; listen first, then read the store."""
        return self.bus.listen(WAKEUP_CHANNEL)
