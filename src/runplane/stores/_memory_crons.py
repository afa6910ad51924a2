"""Crons and the webhook outbox of `InMemoryStore` (a mixin over the store's dicts and lock)."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import datetime, timedelta

from runplane.core.clock import Clock
from runplane.core.errors import Conflict, NotFound, SlotTaken
from runplane.core.lifecycle import cron_is_due, may_claim_slot
from runplane.core.models import (
    Cron,
    CronChanges,
    CronFilter,
    CronFire,
    Json,
    NewCron,
    Thread,
    WebhookDelivery,
)


def metadata_matches(metadata: Json, wanted: Json) -> bool:
    """Subset match, as LangGraph's thread search (`metadata @> wanted`)."""
    return all(key in metadata and metadata[key] == value for key, value in wanted.items())


def copy_cron(cron: Cron) -> Cron:
    return replace(
        cron,
        payload=copy.deepcopy(cron.payload),
        kwargs=copy.deepcopy(cron.kwargs),
        metadata=copy.deepcopy(cron.metadata),
    )


def _copy_delivery(delivery: WebhookDelivery) -> WebhookDelivery:
    return replace(delivery, payload=copy.deepcopy(delivery.payload))


def _cron_sort_key(cron: Cron, sort_by: str) -> tuple[int, object, str]:
    value = getattr(cron, sort_by)
    # None sorts first ascending (and so last descending), as the SQL stores are told to.
    return (0, "", cron.cron_id) if value is None else (1, value, cron.cron_id)


class MemoryCronsAndWebhooks:
    """The crons and outbox methods of `InMemoryStore`; see `core.store.Store` for their contracts."""

    _lock: asyncio.Lock
    _clock: Clock
    _crons: dict[str, Cron]
    #: The webhook outbox, in insertion order.
    _webhooks: dict[str, WebhookDelivery]

    def _owned_thread(self, thread_id: str, owner: str) -> Thread:
        raise NotImplementedError  # provided by InMemoryStore

    # -- crons ----------------------------------------------------------------------------------

    def _owned_cron(self, cron_id: str, owner: str) -> Cron:
        cron = self._crons.get(cron_id)
        if cron is None or cron.owner != owner:
            raise NotFound(f"cron {cron_id} not found")
        return cron

    async def create_cron(self, new: NewCron) -> Cron:
        async with self._lock:
            if new.thread_id is not None:
                self._owned_thread(new.thread_id, new.owner)
            if new.cron_id in self._crons:
                raise Conflict(f"cron {new.cron_id} already exists")
            now = self._clock.now()
            cron = Cron(
                cron_id=new.cron_id,
                owner=new.owner,
                assistant_id=new.assistant_id,
                thread_id=new.thread_id,
                schedule=new.schedule,
                timezone=new.timezone,
                end_time=new.end_time,
                enabled=new.enabled,
                on_run_completed=new.on_run_completed,
                payload=copy.deepcopy(new.payload),
                kwargs=copy.deepcopy(new.kwargs),
                metadata=copy.deepcopy(new.metadata),
                multitask_strategy=new.multitask_strategy,
                next_run_date=new.next_run_date,
                created_at=now,
                updated_at=now,
            )
            self._crons[cron.cron_id] = cron
            return copy_cron(cron)

    async def get_cron(self, cron_id: str, owner: str) -> Cron:
        return copy_cron(self._owned_cron(cron_id, owner))

    async def update_cron(self, cron_id: str, owner: str, changes: CronChanges) -> Cron:
        async with self._lock:
            cron = self._owned_cron(cron_id, owner)
            updated = replace(
                cron,
                schedule=changes.schedule if changes.schedule is not None else cron.schedule,
                timezone=changes.timezone if changes.timezone is not None else cron.timezone,
                end_time=None
                if changes.clear_end_time
                else (changes.end_time if changes.end_time is not None else cron.end_time),
                enabled=changes.enabled if changes.enabled is not None else cron.enabled,
                on_run_completed=changes.on_run_completed
                if changes.on_run_completed is not None
                else cron.on_run_completed,
                payload=copy.deepcopy(changes.payload) if changes.payload is not None else cron.payload,
                kwargs=copy.deepcopy(changes.kwargs) if changes.kwargs is not None else cron.kwargs,
                metadata={**cron.metadata, **copy.deepcopy(changes.metadata or {})},
                next_run_date=changes.next_run_date if changes.set_next_run_date else cron.next_run_date,
                updated_at=self._clock.now(),
            )
            self._crons[cron_id] = updated
            return copy_cron(updated)

    async def delete_cron(self, cron_id: str, owner: str) -> None:
        async with self._lock:
            self._owned_cron(cron_id, owner)
            del self._crons[cron_id]

    def _matching_crons(self, owner: str, filter: CronFilter) -> list[Cron]:
        return [
            cron
            for cron in self._crons.values()
            if cron.owner == owner
            and (filter.assistant_id is None or cron.assistant_id == filter.assistant_id)
            and (filter.thread_id is None or cron.thread_id == filter.thread_id)
            and (filter.enabled is None or cron.enabled == filter.enabled)
            and metadata_matches(cron.metadata, filter.metadata)
        ]

    async def search_crons(self, owner: str, filter: CronFilter) -> list[Cron]:
        crons = self._matching_crons(owner, filter)
        crons.sort(key=lambda c: _cron_sort_key(c, filter.sort_by), reverse=filter.sort_order == "desc")
        return [copy_cron(c) for c in crons[filter.offset : filter.offset + filter.limit]]

    async def count_crons(self, owner: str, filter: CronFilter) -> int:
        return len(self._matching_crons(owner, filter))

    async def due_crons(self, now: datetime, limit: int = 100) -> list[Cron]:
        due = [c for c in self._crons.values() if cron_is_due(c.enabled, c.next_run_date, c.end_time, now)]
        due.sort(key=lambda c: (c.next_run_date, c.cron_id))
        return [copy_cron(c) for c in due[:limit]]

    async def next_cron_slot(self) -> datetime | None:
        slots = [
            c.next_run_date
            for c in self._crons.values()
            if c.enabled
            and c.next_run_date is not None
            and (c.end_time is None or c.next_run_date <= c.end_time)
        ]
        return min(slots, default=None)

    async def skip_cron_slot(self, fire: CronFire) -> bool:
        async with self._lock:
            try:
                self._check_slot(fire)
            except SlotTaken:
                return False
            self._move_slot(fire)
            return True

    def _check_slot(self, fire: CronFire) -> None:
        """Raise `SlotTaken` unless the cron still waits for `fire.slot` (the caller holds the lock)."""
        cron = self._crons.get(fire.cron_id)
        if cron is None or not may_claim_slot(cron.next_run_date, cron.enabled, fire.slot):
            raise SlotTaken(f"cron {fire.cron_id} slot {fire.slot.isoformat()} is taken")

    def _move_slot(self, fire: CronFire) -> None:
        cron = self._crons[fire.cron_id]
        self._crons[fire.cron_id] = replace(
            cron, next_run_date=fire.next_run_date, updated_at=self._clock.now()
        )

    # -- webhook outbox -------------------------------------------------------------------------

    async def claim_webhooks(self, lease_seconds: float, limit: int = 20) -> list[WebhookDelivery]:
        async with self._lock:
            now = self._clock.now()
            due = sorted(
                (d for d in self._webhooks.values() if d.status == "pending" and d.next_attempt_at <= now),
                key=lambda d: (d.next_attempt_at, d.created_at),
            )[:limit]
            claimed = []
            for delivery in due:
                taken = replace(
                    delivery,
                    attempts=delivery.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=lease_seconds),
                )
                self._webhooks[delivery.delivery_id] = taken
                claimed.append(_copy_delivery(taken))
            return claimed

    async def webhook_delivered(self, delivery_id: str) -> None:
        async with self._lock:
            self._webhooks.pop(delivery_id, None)

    async def webhook_failed(self, delivery_id: str, error: str, retry_at: datetime | None) -> None:
        async with self._lock:
            delivery = self._webhooks.get(delivery_id)
            if delivery is None:
                return
            self._webhooks[delivery_id] = replace(
                delivery,
                last_error=error,
                status="pending" if retry_at is not None else "failed",
                next_attempt_at=retry_at if retry_at is not None else delivery.next_attempt_at,
            )

    async def next_webhook_due(self) -> datetime | None:
        return min(
            (d.next_attempt_at for d in self._webhooks.values() if d.status == "pending"), default=None
        )

    async def list_webhooks(self, limit: int = 100) -> list[WebhookDelivery]:
        ordered = sorted(self._webhooks.values(), key=lambda d: (d.created_at, d.delivery_id))
        return [_copy_delivery(d) for d in ordered[:limit]]
