"""`RunManager`'s thread-state use-cases (`POST /threads/{id}/state`, `threads.create(supersteps=...)`);
a mixin, like `core.resources`.

A state update writes a checkpoint outside the store (LangGraph's checkpointer, through the
`GraphRuntime`), then copies the new state onto the thread record. Done as three steps, a run admitted
in between would execute from a checkpoint the update is about to replace, and the update would then
mark a busy thread idle. So the update first *holds* the thread in the store (`Store.reserve_thread`,
one transaction, refused while a run is active), and admission waits while the hold lasts. The hold
is a row in the database, not a lock in this process: it serializes updates and admissions of every
process, and a crashed holder's hold expires after `lease_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runplane.core.errors import ThreadBusy, ThreadReserved
from runplane.core.events import EventBus, HintWaiter
from runplane.core.graphs import GraphRuntime
from runplane.core.lifecycle import thread_status_of_state
from runplane.core.models import Admission, Json, NewRun, Thread, ThreadStateWrite

if TYPE_CHECKING:
    from runplane.core.manager import ManagerSettings
    from runplane.core.store import Store

logger = logging.getLogger(__name__)


def state_channel(thread_id: str) -> str:
    """Channel on which admissions waiting for a thread hear that a state update released it."""
    return f"runplane:state:{thread_id}"


def interrupts_of(state: Json) -> Json:
    """A `ThreadState`'s pending interrupts by task id, as a thread record keeps them."""
    return {
        task["id"]: task["interrupts"]
        for task in state.get("tasks") or ()
        if isinstance(task, dict) and task.get("interrupts")
    }


def state_write(state: Json) -> ThreadStateWrite:
    """What a thread record shows of a `ThreadState` read back after an update."""
    interrupts = interrupts_of(state)
    values = state.get("values")
    return ThreadStateWrite(
        values if isinstance(values, dict) else None,
        interrupts,
        thread_status_of_state(bool(interrupts or state.get("next"))),
    )


class StateUpdates:
    """Thread-state writes, atomic against run admission; mixed into `RunManager`."""

    if TYPE_CHECKING:
        store: Store
        bus: EventBus
        settings: ManagerSettings

    async def update_thread_state(
        self,
        runtime: GraphRuntime,
        graph_id: str,
        thread_id: str,
        owner: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Json:
        """Write a checkpoint of `graph_id` on the thread (`runtime.update_state`) and record the
        new state on the thread, with no run admitted or running meanwhile.

        Returns:
            `{"checkpoint": {...}}` as the runtime answers it.

        Raises:
            NotFound: unknown thread.
            ThreadBusy: a run is active on the thread, or another update holds it.
            Exception: whatever the runtime raises for a bad update (nothing is recorded).
        """
        async with self._holding(thread_id, owner) as hold:
            result = await runtime.update_state(
                graph_id, thread_id, values, as_node=as_node, checkpoint_id=checkpoint_id
            )
            await self._record(runtime, graph_id, hold)
        return result

    async def write_supersteps(
        self, runtime: GraphRuntime, graph_id: str, thread_id: str, owner: str, supersteps: Sequence[Json]
    ) -> Thread | None:
        """Apply `supersteps` (`threads.create(supersteps=...)`) and record the new state, as
        `update_thread_state` does. Returns the thread (None if it was deleted meanwhile)."""
        async with self._holding(thread_id, owner) as hold:
            await runtime.bulk_update_state(graph_id, thread_id, list(supersteps))
            return await self._record(runtime, graph_id, hold)

    @contextlib.asynccontextmanager
    async def _holding(self, thread_id: str, owner: str) -> AsyncIterator[_Hold]:
        """Hold the thread for the block; the hold ends (and waiting admissions are told) however the
        block ends."""
        hold = _Hold(thread_id, str(uuid.uuid4()))
        await self.store.reserve_thread(thread_id, owner, hold.token, self.settings.lease_seconds)
        try:
            yield hold
        finally:
            try:
                if not hold.released:
                    await self.store.release_thread(thread_id, hold.token)
            finally:
                await self.bus.notify(state_channel(thread_id), hold.token)

    async def _record(self, runtime: GraphRuntime, graph_id: str, hold: _Hold) -> Thread | None:
        """Copy the graph's new state onto the thread and end the hold, in one store transaction."""
        state = await runtime.get_state(graph_id, hold.thread_id)
        thread = await self.store.release_thread(hold.thread_id, hold.token, state_write(state))
        hold.released = True
        return thread

    async def _admit(self, new: NewRun) -> Admission:
        """`Store.create_run`, waiting while a state update holds the thread (then the run is
        admitted after the update, as if it had come a moment later).

        Raises:
            ThreadBusy: the thread stayed held for twice the hold's lifetime (a hold expires after
                `lease_seconds`, so only a stream of back-to-back updates can cause this).
        """
        try:
            return await self.store.create_run(new)
        except ThreadReserved:
            pass
        try:
            async with asyncio.timeout(2 * self.settings.lease_seconds + self.settings.wait_fallback_seconds):
                return await self._admit_when_released(new)
        except TimeoutError:
            raise ThreadBusy("thread is busy: a state update holds it") from None

    async def _admit_when_released(self, new: NewRun) -> Admission:
        # Listen, then try again: a release between the two is not missed.
        async with (
            self.bus.listen(state_channel(new.thread_id)) as hints,
            contextlib.aclosing(HintWaiter(hints, self.settings.wait_fallback_seconds)) as hint,
        ):
            while True:
                try:
                    return await self.store.create_run(new)
                except ThreadReserved:
                    pass
                await hint.wait()


@dataclass(slots=True)
class _Hold:
    """A state update's hold on a thread (see `Store.reserve_thread`)."""

    thread_id: str
    token: str
    released: bool = False
