"""Writing many queued events in one step: what `ResilientBus` asks of a shared bus it batches for.

`ResilientBus.enqueue` queues a run's events and delivers everything queued meanwhile, for every
run, in one `publish_many` call: one INSERT on PostgreSQL, one round trip to Redis. A bus without
`publish_many` gets its events one `publish` at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class StreamBatch:
    """Events to append to one run's stream, in order, then the end mark when `end`."""

    run_id: str
    events: Sequence[tuple[str, bytes]]
    end: bool = False


@runtime_checkable
class SupportsPublishMany(Protocol):
    async def publish_many(self, batches: Sequence[StreamBatch]) -> None:
        """Append each batch as `publish` would each of its events (dropped once the stream ended),
        then `end_stream` it when `batch.end`: one step for all the batches.

        Raises:
            StoreUnavailable: the bus failed; nothing was written.
        """
        ...


@dataclass(frozen=True, slots=True)
class Hint:
    """A hint (`EventBus.notify`) to send with a batch, as its bus names it on the wire (`channel`);
    `echo`: this process's listeners heard it already, and its copy from the bus is to be dropped."""

    channel: str
    message: str
    echo: bool = False


@runtime_checkable
class SupportsBatchedHints(Protocol):
    """A shared bus whose `publish_many` also sends hints, after the batches, in the same step:
    `ResilientBus.notify` then costs no round trip of its own, and a run's end and its done hint
    leave together."""

    def hint_here(self, channel: str, message: str) -> Hint:
        """Hand a hint on `channel` to this process's listeners now; returns it as `publish_many`
        sends it to the others."""
        ...

    def hint_lost(self, hint: Hint) -> None:
        """`hint` will not be sent after all (its delivery failed): expect no copy of it."""
        ...

    async def publish_many(self, batches: Sequence[StreamBatch], hints: Sequence[Hint] = ()) -> None:
        """`SupportsPublishMany.publish_many`, then each hint, in one step.

        Raises:
            StoreUnavailable: the bus failed; nothing was written or sent.
        """
        ...


class Pacer:
    """Makes a producer that never waits yield the event loop every `slice_seconds`.

    A graph's burst of ready chunks reaches the bus without a single suspension when queueing costs
    no I/O (`InMemoryBus`, `ResilientBus.enqueue`): the producer would hold the loop until the burst
    ends, and deliveries, subscribers and SSE writes, the first event's included, would wait for it.
    Yielding once per slice lets them keep pace at the cost of one loop iteration per slice.
    """

    __slots__ = ("_next", "slice_seconds")

    def __init__(self, slice_seconds: float = 0.001) -> None:
        self.slice_seconds = slice_seconds
        self._next = 0.0

    async def pace(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next:
            await asyncio.sleep(0)
            self._next = loop.time() + self.slice_seconds
