"""Runs a worker of this process ended while a caller in this process waited for them.

A worker and the API in one process are the common case. The caller of `runs.wait` heard the "done"
hint at once (it is delivered locally), then read the run and its thread back from the store: two
reads, for what the worker had in hand when it ended the run. `EndedHere` hands it over instead:
the run as the store ended it, and the outcome whose values the store wrote onto the thread.

Only while someone here waits for that run, so nothing accumulates; a waiter that finds nothing
(the run ended in another process, or was recovered, rolled back or deleted) reads the store as
before.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from runplane.core.models import Outcome, Run


class EndedHere:
    """The ended runs that callers in this process are waiting for (see the module doc)."""

    def __init__(self) -> None:
        self._waiters: Counter[str] = Counter()
        self._ended: dict[str, tuple[Run, Outcome]] = {}

    @contextlib.contextmanager
    def waiting(self, run_id: str) -> Iterator[None]:
        """While the block runs, keep what a worker here ends `run_id` with (`ended`)."""
        self._waiters[run_id] += 1
        try:
            yield
        finally:
            self._waiters[run_id] -= 1
            if self._waiters[run_id] <= 0:
                del self._waiters[run_id]
                self._ended.pop(run_id, None)

    def ended(self, run: Run, outcome: Outcome) -> None:
        """A worker here ended `run` (terminal, as the store returned it) with `outcome`."""
        if run.run_id in self._waiters:
            self._ended[run.run_id] = (run, outcome)

    def get(self, run_id: str) -> tuple[Run, Outcome] | None:
        return self._ended.get(run_id)
