"""`RunManager`: the use-cases. The API and the workers call these and nothing below them.

The manager holds no per-run state: the store has the truth, the bus carries the hints. Whatever a
process remembers about a run (a stream subscription, a join, the outcome a worker here handed to a
waiter here: `EndedHere`) lives only as long as that call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from runplane.core.clock import Clock, SystemClock
from runplane.core.cron_use_cases import CronUseCases
from runplane.core.ended_here import EndedHere
from runplane.core.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from runplane.core.events import (
    WAKEUP_CHANNEL,
    EventBus,
    StreamEvent,
    cancel_channel,
    done_channel,
    taken_hint,
)
from runplane.core.lifecycle import webhook_url
from runplane.core.models import (
    CANCEL_ACTIONS,
    MULTITASK_STRATEGIES,
    SINGLE_USER,
    Admission,
    AssistantSeen,
    CancelAction,
    Claimant,
    CronFire,
    IfNotExists,
    Json,
    MultitaskStrategy,
    NewRun,
    NewThread,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
)
from runplane.core.observe import NullObserver, Observer
from runplane.core.pages import MAX_LIMIT, check_page, new_id
from runplane.core.resources import ResourceUseCases
from runplane.core.run_kwargs import RunKwargs
from runplane.core.schedule import Schedule
from runplane.core.state_updates import StateUpdates
from runplane.core.store import Store
from runplane.core.thread_streams import ThreadStreams
from runplane.core.waits import Waits
from runplane.core.webhooks import WEBHOOKS_CHANNEL, UrlGuard
from runplane.core.worker_use_cases import TakesRunsAtAdmission, WorkerUseCases

logger = logging.getLogger(__name__)


__all__ = ["MAX_LIMIT", "ManagerSettings", "RunManager", "fingerprint", "new_id"]


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


def fingerprint(payload: Json) -> str:
    """A stable digest of a run request, to tell a replayed idempotency key from a reused one."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class RunManager(WorkerUseCases, Waits, CronUseCases, StateUpdates, ResourceUseCases, ThreadStreams):
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
        self.ended_here = EndedHere()
        #: A worker of this process that takes runs at their admission (`take_runs_here`).
        self.taking_runs: TakesRunsAtAdmission | None = None

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
                await self._hint_cancel(run)

    async def search_threads(
        self, owner: str = SINGLE_USER, filter: ThreadFilter | None = None
    ) -> list[Thread]:
        filter = filter or ThreadFilter()
        check_page(filter.limit, filter.offset)
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
        awaited: bool = False,
        assistant_seen: AssistantSeen | None = None,
    ) -> Run:
        """Admit a run; it starts as soon as a worker is free and its thread is.

        `kwargs` is what the run executes; a mapping of the same keys is validated into one
        (`RunKwargs.parse`). `thread_config` is the run's config as its thread shows it from now on (see
        `lifecycle.thread_config_after_admission`); the store merges it when it admits the run.
        `cron` admits it for that cron slot only (see `Store.create_run`); `thread_metadata` is
        given to a thread that `if_not_exists="create"` creates; `thread_metadata_update` is merged
        into the thread's metadata by the admission itself. `awaited`: the caller will wait for the
        run (`wait_for_outcome`); if a worker here takes it, its end is kept for that wait
        (`EndedHere.expect`). `assistant_seen`: the assistant version the run was built from
        (`assistant_for_run`), admitted only while current.

        Raises:
            InvalidInput: unknown strategy, negative delay, unknown or ill-typed kwargs.
            NotFound: unknown thread and `if_not_exists` is "reject".
            ThreadBusy: `reject` on a busy thread.
            Conflict: idempotency key reused with another payload.
            AssistantChanged: `assistant_seen` is no longer the assistant's current version.
        """
        if multitask_strategy not in MULTITASK_STRATEGIES:
            raise InvalidInput(f"unknown multitask_strategy {multitask_strategy!r}")
        if if_not_exists not in ("create", "reject"):
            raise InvalidInput(f"unknown if_not_exists {if_not_exists!r}")
        if after_seconds is not None and after_seconds < 0:
            raise InvalidInput("after_seconds must be >= 0")
        if not isinstance(kwargs, RunKwargs):
            kwargs = RunKwargs.parse(kwargs or {})
        stored = kwargs.to_json()
        metadata = dict(metadata or {})
        await self.check_webhook(kwargs.webhook)
        digest = None
        if idempotency_key is not None:
            digest = fingerprint(
                {
                    "thread_id": thread_id,
                    "assistant_id": assistant_id,
                    "kwargs": stored,
                    "metadata": metadata,
                    "multitask_strategy": multitask_strategy,
                    "after_seconds": after_seconds,
                }
            )
        not_before = self.clock.now() + timedelta(seconds=after_seconds) if after_seconds else None
        # A worker of this process with a free slot takes the run in its admission, if it can
        # start at once; the slot is reserved first, so that the run is never claimed for a
        # worker that could not start it.
        worker = self.taking_runs
        if worker is not None and not await worker.reserve_slot():
            worker = None
        claimant = None if worker is None else Claimant(worker.worker_id, self.settings.lease_seconds)
        admission = await self._admit_for(
            worker,
            NewRun(
                run_id=run_id or new_id(),
                thread_id=thread_id,
                assistant_id=assistant_id,
                owner=owner,
                multitask_strategy=multitask_strategy,
                if_not_exists=if_not_exists,
                metadata=metadata,
                kwargs=stored,
                not_before=not_before,
                idempotency_key=idempotency_key,
                fingerprint=digest,
                thread_config=thread_config,
                thread_metadata=dict(thread_metadata or {}),
                cron=cron,
                thread_metadata_update=dict(thread_metadata_update or {}),
                claim_for=claimant,
                assistant_seen=assistant_seen,
            ),
        )
        if admission.replayed:
            return admission.run
        created = admission.as_created
        self.observer.run_created(created)
        if worker is not None and admission.claimed:
            self.observer.run_started(admission.run)
            if worker.start_claimed(admission.run):
                if awaited:  # before the run's task first runs: its end is kept, however soon
                    self.ended_here.expect(admission.run)
            else:
                # Its worker stopped during the admission: back to the queue, for another worker,
                # rather than leased to nobody until the lease expires.
                await self.release(admission.run)
        for cancelled in admission.cancelled_pending:
            await self._end(cancelled.run_id)
        for running in admission.cancel_requested:
            await self._hint_cancel(running)
        # Also when a worker took the run (thread streams follow a thread's new runs), saying so:
        # no worker, here or in another process, claims for it.
        hint = taken_hint(created.run_id) if admission.claimed else created.run_id
        await self.bus.notify(WAKEUP_CHANNEL, hint)
        return created

    async def _admit_for(self, worker: TakesRunsAtAdmission | None, new: NewRun) -> Admission:
        """Admit `new`, claimed for `worker` (whose slot is reserved) if it can start at once; the
        slot is given back unless the run was claimed. Returns the admission, with `worker` left to
        start the run it claimed."""
        try:
            admission = await self._admit(new)
        except BaseException:
            if worker is not None:
                worker.release_slot()
            raise
        if worker is not None and not admission.claimed:
            worker.release_slot()
        return admission

    async def get_run(self, run_id: str, owner: str = SINGLE_USER, thread_id: str | None = None) -> Run:
        return await self.store.get_run(run_id, owner, thread_id)

    async def list_runs(
        self, thread_id: str, owner: str = SINGLE_USER, filter: RunFilter | None = None
    ) -> list[Run]:
        filter = filter or RunFilter()
        check_page(filter.limit, filter.offset)
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
            await self._hint_cancel(result.run)
        if not wait:
            return result.run
        return await self.wait_for_run(run_id, owner, thread_id=thread_id)

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
        joins_now = from_now and last_event_id is None and run.status != "pending"
        # Read before subscribing: whatever is published in between is after it, so kept.
        newest = await self.bus.latest_event_id(run_id) if run.is_terminal or joins_now else None
        if run.is_terminal and newest is None:
            # This bus never saw the run, or its stream expired (it ended in another process, or
            # before a restart): without an end mark the subscription would wait forever. A stream
            # with events may still be getting the rest, and its end mark, from a worker that
            # buffered them through a bus outage (`ResilientBus`): an end mark put now would drop
            # them. The reader's watch ends that one, if nothing else does (`_ending_with_run`).
            await self.bus.end_stream(run_id)
        if joins_now:
            last_event_id = newest
        return self._ending_with_run(self.bus.subscribe(run_id, last_event_id), run_id, owner, thread_id)

    async def check_webhook(self, url: object) -> None:
        """Refuse (`InvalidInput`) a webhook URL the server must not call."""
        if url is None or self.url_guard is None:
            return
        if not isinstance(url, str):
            raise InvalidInput("webhook must be a URL")
        await self.url_guard.check(url)

    async def _end(self, run_id: str) -> None:
        # The "done" hint first: a waiter in this process hears it at once (a local delivery) and
        # answers, instead of after the end mark's round trip to a shared bus. Stream readers lose
        # nothing: the run's events were on the bus before its status changed, and a reader that
        # finds the run over before the end mark gets it a moment later (or its watch puts one:
        # `_ending_with_run`).
        await self._announce_done(run_id)
        await self.bus.end_stream(run_id)

    async def _hint_cancel(self, run: Run) -> None:
        """Tell the worker holding `run` (its lease owner) to look at its cancel request."""
        if run.lease_owner is not None:
            await self.bus.notify(cancel_channel(run.lease_owner), run.run_id)

    async def _announce_done(self, run_id: str) -> None:
        self.ended_here.announce(run_id)
        await self.bus.notify(done_channel(run_id), run_id)

    async def _hint_webhook(self, run: Run) -> None:
        # The outbox row is already committed with the status; this only saves dispatchers a wait.
        if webhook_url(run) is not None:
            await self.bus.notify(WEBHOOKS_CHANNEL, run.run_id)

    # -- runs: protocol adapters (MCP, A2A, thread streaming) --------------------------------------

    def follow_new_run(
        self, run_id: str, owner: str = SINGLE_USER, last_event_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """The events of a run `owner` has just created (its ownership is known).

        Unlike `stream_run` this does not re-read the run first: a fast temporary run may already
        be gone with its thread, while its events stay on the bus for the retention period.
        """
        return self._ending_with_run(self.bus.subscribe(run_id, last_event_id), run_id, owner, None)

    async def _ending_with_run(
        self, events: AsyncIterator[StreamEvent], run_id: str, owner: str, thread_id: str | None
    ) -> AsyncIterator[StreamEvent]:
        """`events`, ended once the run is over even if its end mark never comes.

        A worker killed between the run's terminal commit and its end mark leaves none, and a
        reader already following would wait for ever. So the reader watches the run
        (`_end_stream_when_over`) and puts the end mark itself once the run is over and its
        stream stays still. A stream that ends by itself first never reads the store."""
        watching = asyncio.create_task(self._end_stream_when_over(run_id, owner, thread_id))
        try:
            async for event in events:
                yield event
        finally:
            watching.cancel()
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()

    async def _end_stream_when_over(self, run_id: str, owner: str, thread_id: str | None) -> None:
        """End the run's stream once it is gone, or once it was over at two looks a
        `wait_fallback_seconds` apart, with the bus answering both and the stream unchanged
        between them. Over is not enough: a worker that buffered the run's events through a bus
        outage (`ResilientBus`) delivers them, then its own end mark, after the run ended and
        within about a second of the bus's return; an end mark put before would drop them."""
        still: str | None = None  # the stream's newest event at the last look that found it over
        seen_over = False
        while True:
            await asyncio.sleep(self.settings.wait_fallback_seconds)
            try:
                run = await self.store.get_run(run_id, owner, thread_id)
                if run.is_terminal:
                    newest = await self.bus.latest_event_id(run_id)
                    if seen_over and newest == still:
                        await self.bus.end_stream(run_id)
                        return
                    seen_over, still = True, newest
                else:
                    seen_over = False
            except NotFound:
                with contextlib.suppress(StoreUnavailable):
                    await self.bus.end_stream(run_id)
                return
            except StoreUnavailable:
                seen_over = False  # the store or the bus is down: look again, from the start
