"""Writing many queued events in one step: what `ResilientBus` asks of a shared bus it batches for.

`ResilientBus.enqueue` queues a run's events and delivers everything queued meanwhile, for every
run, in one `publish_many` call: one INSERT on PostgreSQL, one round trip to Redis. A bus without
`publish_many` gets its events one `publish` at a time.
"""

from __future__ import annotations

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
