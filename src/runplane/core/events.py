"""The `EventBus` protocol: run output streams and cross-process notifications.

The database is the truth; the bus carries hints (wake-ups, cancel requests, "run done") and the
resumable stream of each run's output. Losing a hint only costs latency: every listener has a
fallback that re-reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

#: Channel on which a new runnable run wakes idle workers (the message is the run's id), and a new
#: run of any kind wakes those who follow a thread's runs.
WAKEUP_CHANNEL = "runplane:wakeup"

#: Starts the message of a wake-up for a run its admission already claimed (`taken_hint`).
_TAKEN = "taken "


def taken_hint(run_id: str) -> str:
    """The wake-up message of a run admitted already claimed by a worker: thread followers re-read
    as for any new run; workers have nothing to claim (`is_taken_hint`)."""
    return _TAKEN + run_id


def is_taken_hint(message: str) -> bool:
    return message.startswith(_TAKEN)


def cancel_channel(worker_id: str) -> str:
    """Channel on which worker `worker_id` hears cancel requests for the runs it holds (the message
    is the run's id). One per worker, subscribed before it claims anything: no subscription per
    run, and no moment between a claim and a subscription in which a hint could be missed."""
    return f"runplane:cancel:{worker_id}"


def done_channel(run_id: str) -> str:
    """Channel on which joiners of `run_id` hear that it reached a terminal status (or was deleted)."""
    return f"runplane:done:{run_id}"


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One item of a run's output stream: an SSE event name and its payload, already JSON-encoded
    once by the publisher so that fan-out and SSE framing never re-encode it."""

    event: str
    data: bytes
    #: Monotonic per run; the SSE `id:` a client resumes from with Last-Event-ID.
    id: str = ""


class EventBus(Protocol):
    """Fan-out of run events and notifications. Implemented by `runplane.events.*`."""

    async def publish(self, run_id: str, event: str, data: bytes) -> str:
        """Append an event to the run's stream; returns its id (strictly increasing per run)."""
        ...

    async def enqueue(self, run_id: str, event: str, data: bytes) -> None:
        """Append an event to the run's stream, possibly later: a shared bus writes what is queued
        meanwhile in one batch (one INSERT, one Redis round trip). Events keep their order with the
        run's other events, `end_stream` included. Returns once queued (waits while the queue is
        full); `flush` waits until they are written."""
        ...

    async def flush(self, run_id: str) -> None:
        """Return once every event queued for the run is written, or the bus failed to write them
        (they stay queued and are retried). Called before the run's terminal status is stored, so a
        joiner that reads that status finds the events on the bus."""
        ...

    async def end_stream(self, run_id: str) -> None:
        """Mark the run's stream complete: subscribers stop after the events published so far."""
        ...

    def subscribe(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[StreamEvent]:
        """Events of the run after `last_event_id` (all retained ones when None), then live ones,
        until the stream is ended. Invalid ids raise `InvalidInput` before anything is yielded."""
        ...

    def subscribe_batches(
        self, run_id: str, last_event_id: str | None = None
    ) -> AsyncIterator[list[StreamEvent]]:
        """As `subscribe`, but each item holds every event available at that moment (never none), so
        that a writer can send them in one write (SSE framing, one socket write per batch)."""
        ...

    async def latest_event_id(self, run_id: str) -> str | None:
        """The id of the run's newest event (None when it has none): subscribing after it yields
        only what is published from now on, as a join without Last-Event-ID does."""
        ...

    async def notify(self, channel: str, message: str = "") -> None:
        """Send a hint to every current listener of `channel` (in any process sharing the bus)."""
        ...

    def listen(self, channel: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """Listen to `channel`. Registration is complete when the context is entered, so a caller
        can listen first and then read the store without missing a notification in between."""
        ...

    async def close(self) -> None: ...


class HintWaiter:
    """Waits for the next hint of a `listen` subscription, or `fallback_seconds`, whichever comes
    first: the loop of every waiter that re-reads the store when hinted (hints can be lost, so the
    store is re-read at least every `fallback_seconds`).

    One pending `anext` is kept across timeouts: cancelling it would close an async-generator
    subscription, and every later `anext` would raise StopAsyncIteration. When the hints end (the
    bus is closing), each wait lasts `fallback_seconds`: the caller polls the store instead.
    `aclose` (e.g. through `contextlib.aclosing`) cancels the pending `anext`.
    """

    def __init__(self, hints: AsyncIterator[str], fallback_seconds: float) -> None:
        self._hints = hints
        self._fallback_seconds = fallback_seconds
        self._pending: asyncio.Future[str] | None = None

    async def wait(self) -> None:
        if self._pending is None:
            self._pending = asyncio.ensure_future(anext(self._hints))
        done, _ = await asyncio.wait({self._pending}, timeout=self._fallback_seconds)
        if not done:
            return
        if self._pending.exception() is None:
            self._pending = None
        else:  # the hints ended; the ended `anext` is kept, so no new one is started
            await asyncio.sleep(self._fallback_seconds)

    async def aclose(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
