"""State-update holds of `InMemoryStore` (a mixin over the store's dicts and lock).

A hold lives beside the thread record, not in it (`Thread` is the API's record); it is gone with
the thread, like the SQL stores' columns.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import datetime, timedelta

from runplane.core.clock import Clock
from runplane.core.errors import LeaseLost
from runplane.core.lifecycle import check_not_reserved, reserve_plan
from runplane.core.models import Thread, ThreadStateWrite


class MemoryThreadState:
    """`reserve_thread` and `release_thread` of `InMemoryStore`; see `core.store.Store`."""

    _clock: Clock
    _lock: asyncio.Lock
    _threads: dict[str, Thread]
    #: thread id -> (token, valid until) of the state update holding it.
    _holds: dict[str, tuple[str, datetime]]

    # Provided by InMemoryStore.
    def _owned_thread(self, thread_id: str, owner: str) -> Thread:
        raise NotImplementedError

    def _has_active(self, thread_id: str) -> bool:
        raise NotImplementedError

    def _held_until(self, thread_id: str) -> datetime | None:
        hold = self._holds.get(thread_id)
        return None if hold is None else hold[1]

    def _check_not_reserved(self, thread_id: str) -> None:
        """Called by `create_run` under the store's lock."""
        check_not_reserved(thread_id, self._held_until(thread_id), self._clock.now())

    async def reserve_thread(self, thread_id: str, owner: str, token: str, seconds: float) -> Thread:
        async with self._lock:
            thread = self._owned_thread(thread_id, owner)
            now = self._clock.now()
            reserve_plan(self._has_active(thread_id), self._held_until(thread_id), now)
            self._holds[thread_id] = (token, now + timedelta(seconds=seconds))
            return _copy(thread)

    async def release_thread(
        self, thread_id: str, token: str, state: ThreadStateWrite | None = None
    ) -> Thread | None:
        async with self._lock:
            thread = self._threads.get(thread_id)
            held = self._holds.get(thread_id)
            if thread is None:
                self._holds.pop(thread_id, None)
                return None
            if held is None or held[0] != token:
                if state is None:
                    return _copy(thread)
                raise LeaseLost(f"thread {thread_id}: the state update's hold expired and was taken over")
            del self._holds[thread_id]
            if state is not None:
                thread = replace(
                    thread,
                    values=copy.deepcopy(state.values),
                    interrupts=copy.deepcopy(state.interrupts),
                    status="busy" if self._has_active(thread_id) else state.status,
                    updated_at=self._clock.now(),
                )
                self._threads[thread_id] = thread
            return _copy(thread)


def _copy(thread: Thread) -> Thread:
    return replace(
        thread,
        metadata=copy.deepcopy(thread.metadata),
        values=copy.deepcopy(thread.values),
        interrupts=copy.deepcopy(thread.interrupts),
        config=copy.deepcopy(thread.config),
    )
