"""`Attempt`: one run a worker executes, and what the attempt does with the store and the bus
itself: keep its lease and hear its cancel request (`heartbeat`, `check`), fence its checkpoint
writes (`hold`), publish its events, record its token usage. Once its lease is lost, it writes
nothing more (fencing) and its execution is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from runplane.core.errors import LeaseLost, NotFound
from runplane.core.manager import RunManager
from runplane.core.models import Outcome, Run, TokenUsage
from runplane.runtime.serde import dumpb
from runplane.worker import faults

StopReason = Literal["interrupt", "rollback", "lease_lost", "shutdown"]

#: How soon a run first renews its lease and re-reads its durable cancel request: soon, in case a
#: cancel's hint was lost (the bus was down a moment); then every `heartbeat_seconds`.
FIRST_CHECK_SECONDS = 0.5

#: Told of a failed store or bus call: (error, what failed, the run's id).
FaultSeen = Callable[[BaseException, str, str], None]


@dataclass(eq=False)
class Attempt:
    """What the worker tracks about one run it executes, and the attempt's own calls."""

    run: Run
    manager: RunManager
    worker_id: str
    fault_seen: FaultSeen
    task: asyncio.Task[Outcome] | None = None
    stop: StopReason | None = None
    #: Once the lease is lost nothing more is written for this attempt (fencing).
    fenced: bool = False
    watchers: list[asyncio.Task[Any]] = field(default_factory=list)
    #: Executing, with watchers that a cancel hint may join (see `Worker._hinted_cancel`).
    watched: bool = False
    #: Holds entered with `early`, and how many of them a finished wait covers: a wait asks the
    #: store only while some are outstanding. A run's final read, its saver reads and its
    #: settlement each wait; after the first, the others have nothing to ask.
    _handed_early: int = field(default=0, init=False)
    _confirmed: int = field(default=0, init=False)

    def halt(self, reason: StopReason) -> None:
        """Stop the execution for `reason` (the first reason wins; losing the lease always fences)."""
        if reason == "lease_lost":
            self.fenced = True
        elif reason == "shutdown" and self.task is not None and self.task.done():
            return  # it ended by itself: let it finish rather than hand a done run back
        if self.stop is None or reason == "lease_lost":
            self.stop = reason
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def heartbeat(self, every: float) -> None:
        """Renew the lease every `every` seconds (the first time sooner) until cancelled."""
        delay = min(FIRST_CHECK_SECONDS, every)
        backoff = faults.Backoff()
        while True:
            await asyncio.sleep(delay)
            if await self.check():
                delay = every
                backoff.reset()
            else:
                # The store did not answer: try again soon, so the lease is renewed within moments
                # of its return, before other workers could take the run for abandoned.
                delay = min(every, backoff.next())

    async def check(self, *, quiet: bool = True) -> bool:
        """Renew the lease; stop the execution if it is lost or a cancel was requested. False when
        the store could not be asked (with `quiet=False`, its error is raised instead)."""
        try:
            action = await self.manager.renew(self.run, self.worker_id)
        except (LeaseLost, NotFound):
            self.halt("lease_lost")
            return True
        except Exception as exc:
            if not quiet:
                raise
            # The store is unreachable: keep running; the lease decides if we may finish.
            self.fault_seen(exc, f"run {self.run.run_id}: lease renewal failed", self.run.run_id)
            return False
        if action is not None:
            self.halt(action)
        return True

    async def publish(self, event: str, payload: Any) -> None:
        if self.fenced:
            return
        try:
            await self.manager.enqueue(self.run, event, dumpb(payload))
        except Exception as exc:
            if not faults.is_infrastructure(exc):
                raise
            # The stream is a hint; the run's outcome is in the store. A bus that buffers (see
            # `runplane.events.resilient`) never gets here; a bare one loses this event only.
            self.fault_seen(exc, f"run {self.run.run_id}: event dropped", self.run.run_id)

    @property
    def acknowledges_early(self) -> bool:
        """Whether the attempt's checkpoint writes may be acknowledged before they commit: under
        LangGraph's default `durability="async"`, where LangGraph does not wait for them either."""
        return self.run.kwargs.durability in (None, "async")

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Fence one checkpoint write: an attempt that lost its lease writes nothing and stops."""
        if self.fenced:
            raise LeaseLost(f"run {self.run.run_id} attempt {self.run.attempt} lost its lease")
        early = self.acknowledges_early
        self._handed_early += early
        try:
            async with self.manager.hold(self.run, early=early):
                yield
        except (LeaseLost, NotFound):
            self.halt("lease_lost")
            raise

    async def writes_committed(self, *, for_finish: bool = False) -> None:
        """Wait until the checkpoint writes acknowledged early have committed: before the run ends
        (its final state may be read meanwhile, from its own puts), and before any read of the
        saver's database in the attempt. One refused for a lost lease fences the attempt (its execution is
        stopped); an outage is raised as an `InfrastructureFault`, to be ridden out: the attempt
        then continues from what did commit. With `for_finish` (the run ended), the store may
        leave writes not yet begun to the finish, which commits them with the outcome."""
        failure = await self._early_writes_landed(for_finish=for_finish)
        if failure is None:
            return
        if isinstance(failure, (LeaseLost, NotFound)):
            self.halt("lease_lost")
            return
        if (fault := faults.as_fault(failure)) is not None:
            raise fault from failure
        raise failure

    async def writes_settled(self) -> None:
        """Wait until the checkpoint writes acknowledged early have committed or failed, whichever:
        before a cancel reads or rolls back the thread, a hand-back, or a retry after an outage.
        A rollback must not run before a late commit would put a checkpoint back."""
        await self._early_writes_landed()

    async def _early_writes_landed(self, *, for_finish: bool = False) -> BaseException | None:
        """`RunManager.writes_committed`, when writes were handed over early since the last wait
        finished. Concurrent waits each ask the store, which makes each one wait for all."""
        handed = self._handed_early
        if self._confirmed >= handed:
            return None
        failure = await self.manager.writes_committed(self.run, for_finish=for_finish)
        if not for_finish:  # writes left to the finish have not landed: a later wait asks again
            self._confirmed = max(self._confirmed, handed)
        return failure

    async def progress(self, model_name: str | None, usage: TokenUsage) -> None:
        if self.fenced:
            return
        try:
            await self.manager.record_progress(self.run, model_name=model_name, usage=usage)
        except (LeaseLost, NotFound):
            self.halt("lease_lost")
