"""Waiting for runs to end: joins, `runs.wait` and cancel-and-wait; mixed into `RunManager`.

A waiter holds no database connection while it waits. It sleeps on the run's "done" hint and reads
the store when the hint comes, or every `wait_fallback_seconds` in case a hint was lost. A run that
a worker of this process ended is handed over without reading it back (`EndedHere`); one that a
worker here took in its admission for this very wait is waited for here alone (`_wait_here`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from runplane.core.errors import NotFound
from runplane.core.events import EventBus, HintWaiter, done_channel
from runplane.core.models import SINGLE_USER, Outcome, Run, ThreadOutput

if TYPE_CHECKING:
    from runplane.core.ended_here import EndedHere
    from runplane.core.manager import ManagerSettings
    from runplane.core.store import Store

T = TypeVar("T")


class Waits:
    """Wait until a run is terminal, and for what it left on its thread."""

    if TYPE_CHECKING:
        store: Store
        bus: EventBus
        settings: ManagerSettings
        ended_here: EndedHere

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

        async def first() -> tuple[Run, None]:
            return await self.store.get_run(run_id, owner, thread_id), None

        async def after_hint() -> tuple[Run | None, None]:
            try:
                return await first()
            except NotFound:
                return None, None

        def from_ended(run: Run, outcome: Outcome) -> tuple[Run, None]:
            return run, None

        run, _ = await self._wait_until_terminal(
            run_id, owner, thread_id, first, after_hint, from_ended, timeout
        )
        return run

    async def wait_for_outcome(
        self, run_id: str, thread_id: str, owner: str = SINGLE_USER, *, timeout: float | None = None
    ) -> tuple[Run | None, ThreadOutput | None]:
        """`wait_for_run`, and what the run left on its thread (None when the thread is gone).

        Once a hint says the run ended, the run and its thread are read together (one hop on
        SQLite, two connections at once on PostgreSQL), not one after the other; or not at all
        when a worker of this process ended it (`EndedHere`)."""

        async def first() -> tuple[Run, ThreadOutput | None]:
            run = await self.store.get_run(run_id, owner, thread_id)
            return run, (await self._thread_output(thread_id, owner) if run.is_terminal else None)

        async def after_hint() -> tuple[Run | None, ThreadOutput | None]:
            run, thread = await asyncio.gather(
                self.store.get_run(run_id, owner, thread_id),
                self._thread_output(thread_id, owner),
                return_exceptions=True,
            )
            if isinstance(thread, BaseException):
                raise thread
            if isinstance(run, NotFound):
                return None, thread  # deleted (a rollback): the thread as it was restored
            if isinstance(run, BaseException):
                raise run
            return run, thread

        def from_ended(run: Run, outcome: Outcome) -> tuple[Run, ThreadOutput] | None:
            if outcome.thread_values is None and run.status not in ("error", "timeout"):
                return None  # the worker could not read the final state: the thread keeps its own
            return run, ThreadOutput(outcome.thread_values, outcome.thread_interrupts)

        return await self._wait_until_terminal(
            run_id, owner, thread_id, first, after_hint, from_ended, timeout
        )

    async def _thread_output(self, thread_id: str, owner: str) -> ThreadOutput | None:
        try:
            thread = await self.store.get_thread(thread_id, owner)
        except NotFound:
            return None
        return ThreadOutput(thread.values, thread.interrupts)

    async def _wait_until_terminal(
        self,
        run_id: str,
        owner: str,
        thread_id: str | None,
        first: Callable[[], Awaitable[tuple[Run, T]]],
        after_hint: Callable[[], Awaitable[tuple[Run | None, T]]],
        from_ended: Callable[[Run, Outcome], tuple[Run, T] | None],
        timeout: float | None,
    ) -> tuple[Run | None, T]:
        """Read with `first` (its NotFound is raised), then at each "done" hint (or fallback
        period) until the run is terminal, or gone (None): with `from_ended` when a worker of this
        process ended it (`EndedHere`) and that is enough, else with `after_hint`. `owner`'s run
        that a worker here took in its admission for this wait is waited for here alone
        (`_wait_here`)."""
        async with asyncio.timeout(timeout):
            if self.ended_here.expected(run_id, owner, thread_id):
                return await self._wait_here(run_id, after_hint, from_ended)
            async with (
                self.bus.listen(done_channel(run_id)) as hints,
                contextlib.aclosing(HintWaiter(hints, self.settings.wait_fallback_seconds)) as hint,
            ):
                with self.ended_here.waiting(run_id):
                    run: Run | None
                    run, extra = await first()
                    while run is not None and not run.is_terminal:
                        await hint.wait()
                        run, extra = await self._handed_or_read(run_id, after_hint, from_ended)
                    return run, extra

    async def _handed_or_read(
        self,
        run_id: str,
        after_hint: Callable[[], Awaitable[tuple[Run | None, T]]],
        from_ended: Callable[[Run, Outcome], tuple[Run, T] | None],
    ) -> tuple[Run | None, T]:
        """What a worker here ended the run with, when it did and that is enough; else a read."""
        ended = self.ended_here.get(run_id)
        handed = from_ended(*ended) if ended is not None else None
        return handed if handed is not None else await after_hint()

    async def _wait_here(
        self,
        run_id: str,
        after_hint: Callable[[], Awaitable[tuple[Run | None, T]]],
        from_ended: Callable[[Run, Outcome], tuple[Run, T] | None],
    ) -> tuple[Run | None, T]:
        """Wait for a run a worker here took in its admission for this wait
        (`EndedHere.expected`): it ends here, where its end is kept from the admission on and its
        "done" hint is heard without the bus (`EndedHere.announce`). So nothing is read first,
        and no hint is listened for on a shared bus (a subscription, and its round trips, per
        wait). Should it end elsewhere after all (its lease lost, or handed back by a worker
        stopping), the read every `wait_fallback_seconds` finds it."""
        fallback = self.settings.wait_fallback_seconds
        with self.ended_here.waiting(run_id) as announced:
            while True:
                if self.ended_here.get(run_id) is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(fallback):
                            await announced.wait()
                    announced.clear()
                # A read when it ended without an outcome here (a rollback), or was not heard of.
                run, extra = await self._handed_or_read(run_id, after_hint, from_ended)
                if run is None or run.is_terminal:
                    return run, extra
