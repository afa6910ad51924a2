"""`InMemoryStore`: the reference backend. Every other store must behave exactly like it.

One process only: a single `asyncio.Lock` makes each method atomic, which is all the isolation a
single event loop needs. Records are copied in and out, so callers can never mutate the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import datetime
from typing import Literal

from runplane.core.clock import Clock, SystemClock, lease_deadline
from runplane.core.errors import Conflict, LeaseLost, NotFound
from runplane.core.lifecycle import (
    QUEUE_LEFT,
    ThreadSettlement,
    admission_plan,
    cancel_plan,
    check_assistant_unchanged,
    check_transition,
    finish_plan,
    head_is_claimable,
    recovery_plan,
    starts_at_admission,
    thread_config_after_admission,
    thread_status_with_active,
    webhook_payload,
    webhook_url,
)
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    Admission,
    CancelAction,
    CancelResult,
    Claimed,
    Cron,
    Finished,
    Json,
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
    metadata_after_admission,
)
from runplane.core.run_kwargs import RunKwargs
from runplane.core.store import RunOnlyCalls
from runplane.stores._memory_crons import MemoryCronsAndWebhooks, metadata_matches
from runplane.stores._memory_resources import MemoryAssistants, MemoryThreadTtl
from runplane.stores._memory_thread_state import MemoryThreadState


def _copy_run(run: Run) -> Run:
    return replace(run, metadata=copy.deepcopy(run.metadata), kwargs=copy.deepcopy(run.kwargs))


def _copy_thread(thread: Thread) -> Thread:
    return replace(
        thread,
        metadata=copy.deepcopy(thread.metadata),
        values=copy.deepcopy(thread.values),
        interrupts=copy.deepcopy(thread.interrupts),
        config=copy.deepcopy(thread.config),
    )


class InMemoryStore(
    RunOnlyCalls, MemoryCronsAndWebhooks, MemoryAssistants, MemoryThreadTtl, MemoryThreadState
):
    """Threads and runs in dicts. Lost when the process exits; use SQLite to keep them."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = asyncio.Lock()
        self._threads: dict[str, Thread] = {}
        self._holds: dict[str, tuple[str, datetime]] = {}
        self._runs: dict[str, Run] = {}
        #: Admission order: the queue is FIFO by this sequence, per thread and overall.
        self._seq: dict[str, int] = {}
        self._counter = itertools.count(1)
        #: run ids of each thread, oldest first.
        self._thread_runs: dict[str, list[str]] = {}
        #: pending run ids by admission order.
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._running_by_thread: dict[str, str] = {}
        self._active_count: dict[str, int] = {}
        self._idempotency: dict[tuple[str, str], tuple[str, str | None]] = {}
        self._crons: dict[str, Cron] = {}
        #: The webhook outbox, in insertion order.
        self._webhooks: dict[str, WebhookDelivery] = {}

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> InMemoryStore:
        return cls(clock=clock)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def migrate(self) -> None:
        return None

    # -- helpers --------------------------------------------------------------------------------

    def _owned_thread(self, thread_id: str, owner: str) -> Thread:
        thread = self._threads.get(thread_id)
        if thread is None or thread.owner != owner:
            raise NotFound(f"thread {thread_id} not found")
        return thread

    def _owned_run(self, run_id: str, owner: str, thread_id: str | None) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.owner != owner or (thread_id is not None and run.thread_id != thread_id):
            raise NotFound(f"run {run_id} not found")
        return run

    def _held_run(self, run_id: str, attempt: int) -> Run:
        run = self._runs.get(run_id)
        if run is None or run.status != "running" or run.attempt != attempt:
            raise LeaseLost(f"run {run_id} attempt {attempt} no longer holds the lease")
        return run

    def _has_active(self, thread_id: str) -> bool:
        return self._active_count.get(thread_id, 0) > 0

    def _set_run(self, run: Run) -> None:
        previous = self._runs.get(run.run_id)
        self._runs[run.run_id] = run
        was_active = previous is not None and previous.status in ACTIVE_RUN_STATUSES
        is_active = run.status in ACTIVE_RUN_STATUSES
        if is_active != was_active:
            self._active_count[run.thread_id] = self._active_count.get(run.thread_id, 0) + (
                1 if is_active else -1
            )
        if run.status == "pending":
            if previous is None:
                self._pending[run.run_id] = None  # the newest sequence goes last
            elif previous.status != "pending":
                # A re-queued run keeps its original place in the queue: its sequence never changes.
                self._pending[run.run_id] = None
                self._pending = OrderedDict(sorted(self._pending.items(), key=lambda kv: self._seq[kv[0]]))
        else:
            self._pending.pop(run.run_id, None)
        if run.status == "running":
            self._running_by_thread[run.thread_id] = run.run_id
        elif self._running_by_thread.get(run.thread_id) == run.run_id:
            del self._running_by_thread[run.thread_id]

    def _remove_run(self, run_id: str) -> Run:
        run = self._runs.pop(run_id)
        if run.status in ACTIVE_RUN_STATUSES:
            self._active_count[run.thread_id] -= 1
        self._pending.pop(run_id, None)
        self._seq.pop(run_id, None)
        if self._running_by_thread.get(run.thread_id) == run_id:
            del self._running_by_thread[run.thread_id]
        self._thread_runs[run.thread_id].remove(run_id)
        if run.idempotency_key is not None:
            self._idempotency.pop((run.owner, run.idempotency_key), None)
        return run

    def _settle_thread(self, thread_id: str, settlement: ThreadSettlement, **changes: object) -> None:
        thread = self._threads[thread_id]
        if settlement.sets_error:
            changes["error"] = settlement.error
        self._threads[thread_id] = replace(
            thread,
            status=thread_status_with_active(settlement.status, self._has_active(thread_id)),
            updated_at=self._clock.now(),
            **changes,  # type: ignore[arg-type]
        )

    def _enqueue_webhook(self, run: Run) -> None:
        """Put the run's webhook in the outbox, in the same step as its terminal status."""
        url = webhook_url(run)
        if url is None:
            return
        thread = self._threads.get(run.thread_id)
        values = copy.deepcopy(thread.values) if thread is not None else None
        now = self._clock.now()
        delivery_id = str(uuid.uuid4())
        self._webhooks[delivery_id] = WebhookDelivery(
            delivery_id=delivery_id,
            run_id=run.run_id,
            url=url,
            payload=webhook_payload(run, values),
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )

    # -- threads --------------------------------------------------------------------------------

    async def create_thread(
        self, new: NewThread, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Thread:
        async with self._lock:
            thread_id = new.thread_id or str(uuid.uuid4())
            existing = self._threads.get(thread_id)
            if existing is not None:
                if if_exists == "do_nothing" and existing.owner == new.owner:
                    return _copy_thread(existing)
                raise Conflict(f"thread {thread_id} already exists")
            now = self._clock.now()
            thread = Thread(
                thread_id=thread_id,
                owner=new.owner,
                status="idle",
                created_at=now,
                updated_at=now,
                metadata=copy.deepcopy(new.metadata),
            )
            self._threads[thread_id] = thread
            self._thread_runs[thread_id] = []
            return _copy_thread(thread)

    async def get_thread(self, thread_id: str, owner: str) -> Thread:
        return _copy_thread(self._owned_thread(thread_id, owner))

    async def update_thread(self, thread_id: str, owner: str, metadata: Json) -> Thread:
        async with self._lock:
            thread = self._owned_thread(thread_id, owner)
            updated = replace(
                thread,
                metadata={**thread.metadata, **copy.deepcopy(metadata)},
                updated_at=self._clock.now(),
            )
            self._threads[thread_id] = updated
            return _copy_thread(updated)

    async def set_thread_state(
        self,
        thread_id: str,
        owner: str,
        values: Json | None,
        interrupts: Json,
        status: ThreadStatus | None = None,
    ) -> Thread:
        async with self._lock:
            thread = self._owned_thread(thread_id, owner)
            new_status = thread.status if status is None or self._has_active(thread_id) else status
            updated = replace(
                thread,
                values=copy.deepcopy(values),
                interrupts=copy.deepcopy(interrupts),
                status=new_status,
                updated_at=self._clock.now(),
            )
            self._threads[thread_id] = updated
            return _copy_thread(updated)

    async def delete_thread(self, thread_id: str, owner: str) -> list[Run]:
        async with self._lock:
            self._owned_thread(thread_id, owner)
            active = []
            for run_id in list(self._thread_runs[thread_id]):
                run = self._remove_run(run_id)
                if run.status in ACTIVE_RUN_STATUSES:
                    active.append(run)
            del self._threads[thread_id]
            self._holds.pop(thread_id, None)  # a state update's hold ends with its thread
            del self._thread_runs[thread_id]
            self._active_count.pop(thread_id, None)
            for cron_id in [c.cron_id for c in self._crons.values() if c.thread_id == thread_id]:
                del self._crons[cron_id]
            return active

    def _matching_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]:
        ids = set(filter.ids) if filter.ids is not None else None
        return [
            thread
            for thread in self._threads.values()
            if thread.owner == owner
            and (ids is None or thread.thread_id in ids)
            and (filter.status is None or thread.status == filter.status)
            and metadata_matches(thread.metadata, filter.metadata)
        ]

    async def search_threads(self, owner: str, filter: ThreadFilter) -> list[Thread]:
        threads = self._matching_threads(owner, filter)
        threads.sort(
            key=lambda t: (getattr(t, filter.sort_by), t.thread_id), reverse=filter.sort_order == "desc"
        )
        return [_copy_thread(t) for t in threads[filter.offset : filter.offset + filter.limit]]

    async def count_threads(self, owner: str, filter: ThreadFilter) -> int:
        return len(self._matching_threads(owner, filter))

    async def thread_usage(self, thread_id: str, owner: str) -> TokenUsage:
        self._owned_thread(thread_id, owner)
        total = TokenUsage()
        for run_id in self._thread_runs[thread_id]:
            total = total + self._runs[run_id].usage
        return total

    # -- runs -----------------------------------------------------------------------------------

    async def create_run(self, new: NewRun) -> Admission:
        async with self._lock:
            if new.cron is not None:  # checked first; the cron moves only once the run is admitted
                self._check_slot(new.cron)
            assistant_now = self._assistant_seen(new.assistant_id)
            check_assistant_unchanged(new.assistant_id, new.assistant_seen, assistant_now)
            if new.idempotency_key is not None:
                seen = self._idempotency.get((new.owner, new.idempotency_key))
                if seen is not None:
                    run_id, digest = seen
                    if digest != new.fingerprint:
                        raise Conflict("idempotency key already used with a different payload")
                    return Admission(run=_copy_run(self._runs[run_id]), replayed=True)
            if new.run_id in self._runs:
                raise Conflict(f"run {new.run_id} already exists")
            now = self._clock.now()
            thread = self._threads.get(new.thread_id)
            if thread is None and new.if_not_exists == "create":
                thread = Thread(
                    new.thread_id, new.owner, "idle", now, now, copy.deepcopy(new.thread_metadata)
                )
                self._threads[new.thread_id] = thread
                self._thread_runs[new.thread_id] = []
            if thread is None or thread.owner != new.owner:
                raise NotFound(f"thread {new.thread_id} not found")
            self._check_not_reserved(new.thread_id)

            active = [self._runs[r] for r in self._thread_runs[new.thread_id]]
            cancel_running, cancel_pending, action = admission_plan(
                new.multitask_strategy, [(r.run_id, r.status) for r in active]
            )
            requested: list[Run] = []
            for run_id in cancel_running:
                run = self._runs[run_id]
                if run.cancel_action != "rollback":
                    run = replace(run, cancel_action=action, updated_at=now)
                    self._set_run(run)
                requested.append(_copy_run(run))
            cancelled: list[Run] = []
            for run_id in cancel_pending:
                if action == "rollback":
                    cancelled.append(self._remove_run(run_id))
                else:
                    run = replace(
                        self._runs[run_id],
                        status="interrupted",
                        ended_at=now,
                        updated_at=now,
                        cancel_action=action,
                    )
                    self._set_run(run)
                    self._enqueue_webhook(run)
                    cancelled.append(_copy_run(run))

            run = Run(
                run_id=new.run_id,
                thread_id=new.thread_id,
                assistant_id=new.assistant_id,
                owner=new.owner,
                status="pending",
                multitask_strategy=new.multitask_strategy,
                created_at=now,
                updated_at=now,
                metadata=copy.deepcopy(new.metadata),
                kwargs=RunKwargs.from_json(copy.deepcopy(new.kwargs)),
                not_before=new.not_before,
                idempotency_key=new.idempotency_key,
            )
            claimant = new.claim_for
            if claimant is not None and starts_at_admission(
                [(r.run_id, r.status) for r in active], cancel_pending, new.not_before, now
            ):
                run = replace(
                    run,
                    status="running",
                    attempt=1,
                    lease_owner=claimant.worker_id,
                    lease_expires_at=lease_deadline(self._clock, claimant.lease_seconds),
                    started_at=now,
                )
            self._seq[run.run_id] = next(self._counter)
            self._thread_runs[new.thread_id].append(run.run_id)
            self._set_run(run)
            if new.idempotency_key is not None:
                self._idempotency[(new.owner, new.idempotency_key)] = (run.run_id, new.fingerprint)
            config = thread.config
            if new.thread_config is not None:
                config = thread_config_after_admission(thread.config, copy.deepcopy(new.thread_config))
            metadata = metadata_after_admission(thread.metadata, copy.deepcopy(new.thread_metadata_update))
            if metadata is not None:
                thread = replace(thread, metadata=metadata)
            self._threads[new.thread_id] = replace(thread, status="busy", updated_at=now, config=config)
            if new.cron is not None:
                self._move_slot(new.cron)
            return Admission(_copy_run(run), tuple(requested), tuple(cancelled))

    async def get_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        return _copy_run(self._owned_run(run_id, owner, thread_id))

    async def list_runs(self, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
        self._owned_thread(thread_id, owner)
        runs = [self._runs[r] for r in reversed(self._thread_runs[thread_id])]
        if filter.status is not None:
            runs = [r for r in runs if r.status == filter.status]
        return [_copy_run(r) for r in runs[filter.offset : filter.offset + filter.limit]]

    async def request_cancel(
        self, run_id: str, owner: str, action: CancelAction, thread_id: str | None = None
    ) -> CancelResult:
        async with self._lock:
            run = self._owned_run(run_id, owner, thread_id)
            plan = cancel_plan(run.status, run.cancel_action, action)
            now = self._clock.now()
            if plan.step == "delete":
                removed = self._remove_run(run_id)
            elif plan.step == "interrupt":
                run = replace(
                    run, status="interrupted", cancel_action=plan.cancel_action, ended_at=now, updated_at=now
                )
                self._set_run(run)
            elif plan.step == "request" and plan.cancel_action is not None:
                run = replace(run, cancel_action=plan.cancel_action, updated_at=now)
                self._set_run(run)
            if plan.thread is not None:
                self._settle_thread(run.thread_id, plan.thread)
            if plan.webhook_due:
                self._enqueue_webhook(run)
            if plan.step == "delete":
                return CancelResult(removed, settled=True, deleted=True)
            return CancelResult(_copy_run(run), settled=plan.settled)

    async def delete_run(self, run_id: str, owner: str, thread_id: str | None = None) -> Run:
        async with self._lock:
            run = self._owned_run(run_id, owner, thread_id)
            if run.status == "running":
                raise Conflict(f"run {run_id} is running; cancel it first")
            removed = self._remove_run(run_id)
            if run.status == "pending":
                self._settle_thread(run.thread_id, QUEUE_LEFT)
            return removed

    # -- workers --------------------------------------------------------------------------------

    def _claimable(self, now: datetime) -> Iterator[Run]:
        """The claimable queue heads (`head_is_claimable`), oldest first."""
        seen: set[str] = set()
        for run_id in self._pending:
            run = self._runs[run_id]
            if run.thread_id in seen:
                continue  # FIFO per thread: only the oldest pending run of a thread may start
            seen.add(run.thread_id)
            if head_is_claimable(run.not_before, run.thread_id in self._running_by_thread, now):
                yield run

    def _head_claimable(self, thread_id: str, now: datetime) -> bool:
        """Whether the oldest pending run of `thread_id` may be claimed now."""
        for run_id in self._thread_runs.get(thread_id, ()):  # oldest first, as the queue
            run = self._runs[run_id]
            if run.status == "pending":
                return head_is_claimable(run.not_before, thread_id in self._running_by_thread, now)
        return False

    async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed:
        async with self._lock:
            now = self._clock.now()
            run = next(self._claimable(now), None)
            if run is None:
                return Claimed(None)
            check_transition(run.run_id, run.status, "running")
            claimed = replace(
                run,
                status="running",
                attempt=run.attempt + 1,
                lease_owner=worker_id,
                lease_expires_at=lease_deadline(self._clock, lease_seconds),
                started_at=run.started_at or now,
                updated_at=now,
            )
            self._set_run(claimed)
            thread = self._threads[run.thread_id]
            self._threads[run.thread_id] = replace(thread, status="busy", updated_at=now)
            return Claimed(_copy_run(claimed), more=next(self._claimable(now), None) is not None)

    async def renew_lease(
        self, run_id: str, attempt: int, worker_id: str, lease_seconds: float
    ) -> CancelAction | None:
        async with self._lock:
            run = self._held_run(run_id, attempt)
            if run.lease_owner != worker_id:
                raise LeaseLost(f"run {run_id} is held by another worker")
            self._set_run(replace(run, lease_expires_at=lease_deadline(self._clock, lease_seconds)))
            return run.cancel_action

    async def writes_committed(
        self, run_id: str, attempt: int, *, for_finish: bool = False
    ) -> BaseException | None:
        return None  # every write commits before its hold ends

    @contextlib.asynccontextmanager
    async def hold_attempt(
        self, run_id: str, attempt: int, max_seconds: float, *, early: bool = False
    ) -> AsyncIterator[None]:
        async with self._lock:
            self._held_run(run_id, attempt)
        yield

    async def record_progress(
        self, run_id: str, attempt: int, *, model_name: str | None = None, usage: TokenUsage | None = None
    ) -> None:
        async with self._lock:
            run = self._held_run(run_id, attempt)
            self._set_run(
                replace(
                    run,
                    model_name=model_name if model_name is not None else run.model_name,
                    usage=usage if usage is not None else run.usage,
                    updated_at=self._clock.now(),
                )
            )

    async def finish_and_look(self, run_id: str, attempt: int, outcome: Outcome) -> Finished:
        async with self._lock:
            run = self._held_run(run_id, attempt)
            settlement = finish_plan(run_id, run.status, run.cancel_action, outcome)
            now = self._clock.now()
            finished = replace(
                run,
                status=outcome.status,
                error=outcome.error,
                model_name=outcome.model_name if outcome.model_name is not None else run.model_name,
                usage=outcome.usage if outcome.usage is not None else run.usage,
                ended_at=now,
                updated_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
            self._set_run(finished)
            thread = self._threads[run.thread_id]
            self._settle_thread(
                run.thread_id,
                settlement,
                values=copy.deepcopy(outcome.thread_values)
                if outcome.thread_values is not None
                else thread.values,
                interrupts=copy.deepcopy(outcome.thread_interrupts),
            )
            self._enqueue_webhook(finished)
            return Finished(_copy_run(finished), self._head_claimable(run.thread_id, now))

    async def discard_run(self, run_id: str, attempt: int) -> Run:
        async with self._lock:
            self._held_run(run_id, attempt)
            removed = self._remove_run(run_id)
            # A rolled-back run leaves no trace, so the thread is as if it never ran: its error stays.
            self._settle_thread(removed.thread_id, QUEUE_LEFT)
            return removed

    async def release_run(self, run_id: str, attempt: int) -> Run:
        async with self._lock:
            run = self._held_run(run_id, attempt)
            released = replace(
                run, status="pending", lease_owner=None, lease_expires_at=None, updated_at=self._clock.now()
            )
            self._set_run(released)
            return _copy_run(released)

    async def queue_stats(self) -> QueueStats:
        pending = sum(1 for run in self._runs.values() if run.status == "pending")
        running = [run for run in self._runs.values() if run.status == "running"]
        return QueueStats(
            pending=pending,
            running=len(running),
            busy_workers=len({run.lease_owner for run in running if run.lease_owner is not None}),
        )

    async def expired_runs(self, limit: int = 100) -> list[Run]:
        now = self._clock.now()
        expired = [
            _copy_run(run)
            for run_id in self._running_by_thread.values()
            if (run := self._runs[run_id]).lease_expires_at is not None and run.lease_expires_at < now
        ]
        return expired[:limit]

    async def recover_run(self, run_id: str, attempt: int, max_attempts: int) -> Run:
        async with self._lock:
            run = self._held_run(run_id, attempt)
            now = self._clock.now()
            plan = recovery_plan(run, max_attempts, now)
            recovered = replace(
                run,
                status=plan.status,
                error=plan.error,
                ended_at=now if plan.ends_run else run.ended_at,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
            self._set_run(recovered)
            if plan.thread is not None:
                self._settle_thread(run.thread_id, plan.thread)
                self._enqueue_webhook(recovered)
            return _copy_run(recovered)
