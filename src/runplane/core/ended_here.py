"""Runs a worker of this process ended while a caller in this process waited for them.

A worker and the API in one process are the common case. The caller of `runs.wait` heard the "done"
hint at once (it is delivered locally), then read the run and its thread back from the store: two
reads, for what the worker had in hand when it ended the run. `EndedHere` hands it over instead:
the run as the store ended it, and the outcome whose values the store wrote onto the thread.

Only while someone here waits for that run, so nothing accumulates; a waiter that finds nothing
(the run ended in another process, or was recovered, rolled back or deleted) reads the store as
before.

A run that a worker here took in its admission, for a creator that will wait for it (`runs.wait`),
is *expected* (`expect`): its end is kept from then on, even before its waiter comes, so the waiter
need not read the run first to learn whether it ended before it began to wait (`expected`), nor
listen on a shared bus: this process announces the ends it makes (`announce`). Kept ends are
bounded (`KEPT_AT_MOST`): a waiter that never comes leaves no more than that behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, OrderedDict
from collections.abc import Iterator

from runplane.core.models import Outcome, Run

#: The expected runs (and their ends) kept for waiters that have not come yet, at most.
KEPT_AT_MOST = 256


class EndedHere:
    """The ended runs that callers in this process are waiting for (see the module doc)."""

    def __init__(self) -> None:
        self._waiters: Counter[str] = Counter()
        self._ended: dict[str, tuple[Run, Outcome]] = {}
        self._announced: dict[str, asyncio.Event] = {}
        #: Expected runs, oldest first: whose (owner, thread) they are, and their end once a
        #: worker here ended them.
        self._expected: OrderedDict[str, tuple[str, str, tuple[Run, Outcome] | None]] = OrderedDict()

    def expect(self, run: Run) -> None:
        """A worker here has just taken `run` in its admission (its task has not run yet), for a
        creator that will wait for it: keep its end."""
        self._expected[run.run_id] = (run.owner, run.thread_id, None)
        while len(self._expected) > KEPT_AT_MOST:
            self._expected.popitem(last=False)

    def expected(self, run_id: str, owner: str, thread_id: str | None) -> bool:
        """Whether `run_id` is `owner`'s (on `thread_id`, if given) and its end, if a worker here
        ends it, is kept whenever it comes: a waiter that registered (`waiting`) need not read the
        run to learn whether it ended before it began to wait."""
        found = self._expected.get(run_id)
        return found is not None and found[0] == owner and thread_id in (None, found[1])

    @contextlib.contextmanager
    def waiting(self, run_id: str) -> Iterator[asyncio.Event]:
        """While the block runs, keep what a worker here ends `run_id` with (`ended`); the event
        yielded is set each time this process announces the run's end (`announce`)."""
        self._waiters[run_id] += 1
        announced = self._announced.setdefault(run_id, asyncio.Event())
        try:
            yield announced
        finally:
            self._waiters[run_id] -= 1
            if self._waiters[run_id] <= 0:
                del self._waiters[run_id]
                self._ended.pop(run_id, None)
                self._expected.pop(run_id, None)
                self._announced.pop(run_id, None)

    def announce(self, run_id: str) -> None:
        """This process is sending `run_id`'s "done" hint (an end, a rollback's deletion)."""
        if (announced := self._announced.get(run_id)) is not None:
            announced.set()

    def ended(self, run: Run, outcome: Outcome) -> None:
        """A worker here ended `run` (terminal, as the store returned it) with `outcome`."""
        if run.run_id in self._waiters:
            self._ended[run.run_id] = (run, outcome)
        if (found := self._expected.get(run.run_id)) is not None:
            self._expected[run.run_id] = (found[0], found[1], (run, outcome))

    def get(self, run_id: str) -> tuple[Run, Outcome] | None:
        if (ended := self._ended.get(run_id)) is not None:
            return ended
        found = self._expected.get(run_id)
        return None if found is None else found[2]
