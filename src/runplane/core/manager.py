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
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from runplane.core.clock import Clock, SystemClock
from runplane.core.errors import InvalidInput, LeaseLost, NotFound
from runplane.core.events import WAKEUP_CHANNEL, EventBus, StreamEvent, cancel_channel, done_channel
from runplane.core.models import (
    CANCEL_ACTIONS,
    MULTITASK_STRATEGIES,
    SINGLE_USER,
    CancelAction,
    IfNotExists,
    Json,
    MultitaskStrategy,
    NewRun,
    NewThread,
    Outcome,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStatus,
    TokenUsage,
)
from runplane.core.store import Store

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


class RunManager:
    """Create, cancel, wait for and stream runs; the primitives workers execute them with.

    Args:
        store: the durable truth.
        bus: event streams and hints.
        clock: time source (a `FakeClock` in tests).
        settings: lease and retry knobs.
    """

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        clock: Clock | None = None,
        settings: ManagerSettings | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock or SystemClock()
        self.settings = settings or ManagerSettings()

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
    ) -> Run:
        """Admit a run; it starts as soon as a worker is free and its thread is.

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
            )
        )
        if admission.replayed:
            return admission.run
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

    async def delete_run(self, run_id: str, owner: str = SINGLE_USER, thread_id: str | None = None) -> None:
        """Delete a pending or finished run.

        Raises:
            Conflict: the run is running; cancel it first.
        """
        await self.store.delete_run(run_id, owner, thread_id)
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
        result = await self.store.request_cancel(run_id, owner, action, thread_id)
        if result.settled:
            await self._end(run_id)
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
    ) -> AsyncIterator[StreamEvent]:
        """The run's output events after `last_event_id`, live until the run ends.

        Ownership is checked before the first event. A run that ended long ago (its stream expired
        from the bus) yields nothing; the caller reads the final state from the thread.
        """
        run = await self.store.get_run(run_id, owner, thread_id)
        if run.is_terminal:
            # This bus may never have seen the run (it ended in another process, or before a
            # restart): without an end mark the subscription would wait forever. Ending an ended
            # stream is a no-op, so this is safe when the bus did see it.
            await self.bus.end_stream(run_id)
        return self.bus.subscribe(run_id, last_event_id)

    # -- runs: workers ----------------------------------------------------------------------------

    async def claim(self, worker_id: str) -> Run | None:
        return await self.store.claim_run(worker_id, self.settings.lease_seconds)

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
        return await self.bus.publish(run.run_id, event, data)

    async def finish(self, run: Run, outcome: Outcome) -> Run:
        """End a run the worker holds. The status is durable before the stream ends and joiners
        are woken, so whoever reacts to either reads the final status.

        Raises:
            LeaseLost, CancelRequested: see `Store.finish_run`.
        """
        finished = await self.store.finish_run(run.run_id, run.attempt, outcome)
        await self._end(run.run_id)
        return finished

    async def discard(self, run: Run) -> None:
        """Delete a run after rolling its thread back (cancel `rollback`)."""
        await self.store.discard_run(run.run_id, run.attempt)
        await self._end(run.run_id)

    async def release(self, run: Run) -> Run:
        """Hand a run back to the queue (graceful shutdown); another worker resumes it."""
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
            if settled.is_terminal:
                await self._end(run.run_id)
            else:
                await self.bus.notify(WAKEUP_CHANNEL, run.run_id)
        return recovered

    async def _end(self, run_id: str) -> None:
        await self.bus.end_stream(run_id)
        await self._announce_done(run_id)

    async def _announce_done(self, run_id: str) -> None:
        await self.bus.notify(done_channel(run_id), run_id)

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
