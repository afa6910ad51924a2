"""`Worker`: claims runs, executes them with bounded concurrency, keeps their leases, obeys cancels.

The loop is arq's: claim (a conditional update that takes a TTL lease), heartbeat, cancel with
`task.cancel()` recording why, and on shutdown stop claiming, wait, then cancel and hand back.
Pick-up is event driven: the worker listens on `WAKEUP_CHANNEL` before it first looks at the queue,
so a run created at any later moment wakes it; a slow poll covers lost hints and `after_seconds`.
A run admitted by this process while the worker has a free slot needs no claim at all: the admission
claims it for the worker, in its own transaction (`RunManager.take_runs_here`, `start_claimed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from runplane.core.errors import CancelRequested, InfrastructureFault, LeaseLost, NotFound
from runplane.core.events import is_taken_hint
from runplane.core.manager import RunManager
from runplane.core.models import CancelAction, Claimed, Outcome, Run
from runplane.core.observe import bind_run
from runplane.worker import faults
from runplane.worker.attempt import Attempt
from runplane.worker.executor import Execution, Runtime

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Cancel hints remembered for runs this worker has not started executing yet (bounded: a hint for a
#: run that never starts here is dropped eventually; its request stays in the store).
EARLY_CANCELS = 1024

#: Pauses before claiming again when a wake-up hint came but the claim found nothing: the hinted
#: run's thread may be held a moment longer by another transaction (PostgreSQL's claim skips locked
#: threads), and no second hint comes for it. Short, and few, so the fallback poll stays a fallback.
RECLAIM_AFTER_HINT_SECONDS = (0.002, 0.01, 0.05, 0.25)

#: How long a paused attempt waits for one probe of the checkpointer before trying again.
PROBE_SECONDS = 5.0

#: After the store comes back from an outage, live workers get this long to renew the leases that
#: expired meanwhile before anyone treats those runs as abandoned (a recovery charges an attempt).
OUTAGE_GRACE_SECONDS = 2 * faults.BACKOFF_CAP + 1.0


class Worker:
    """Executes runs from `manager`'s queue with the graphs of `runtime`.

    Args:
        manager: the run manager (store, bus, clock).
        runtime: graphs and checkpointer (`runplane.runtime.graphs.LangGraphRuntime`).
        concurrency: runs executed at once.
        worker_id: lease owner name; defaults to host:pid:random.
        heartbeat_seconds: lease renewal period; defaults to a third of the lease.
        recovery_interval: how often expired leases of dead workers are recovered; defaults to
            half the lease (at most 5 s), so a dead worker's runs wait about one lease, not more.
        default_timeout: seconds before a run ends `timeout` (None: never).
        shutdown_grace: how long `stop()` lets running runs finish before handing them back.
        poll_interval: fallback queue poll when no wake-up hint comes.
    """

    def __init__(
        self,
        manager: RunManager,
        runtime: Runtime,
        *,
        concurrency: int = 8,
        worker_id: str | None = None,
        heartbeat_seconds: float | None = None,
        recovery_interval: float | None = None,
        default_timeout: float | None = None,
        shutdown_grace: float = 10.0,
        poll_interval: float = 1.0,
        claim_retry_seconds: tuple[float, ...] = RECLAIM_AFTER_HINT_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.manager = manager
        self.runtime = runtime
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.heartbeat_seconds = heartbeat_seconds or manager.settings.lease_seconds / 3
        self.recovery_interval = recovery_interval or min(5.0, manager.settings.lease_seconds / 2)
        self.default_timeout = default_timeout
        self.shutdown_grace = shutdown_grace
        self.poll_interval = poll_interval
        self.claim_retry_seconds = claim_retry_seconds
        self.claimed = self.succeeded = self.failed = self.cancelled = self.recovered = 0
        #: Runs claimed only after the fallback poll timed out: ideally 0 with no `after_seconds`.
        self.polled = 0
        #: A wake-up hint came from the bus since the last claim (not just a finished run).
        self._hinted = False
        self._slots = asyncio.Semaphore(concurrency)
        self._attempts: dict[str, Attempt] = {}
        #: Run ids whose cancel hint came before their execution started (an ordered set).
        self._early_cancels: dict[str, None] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._stopping = False
        #: `time.monotonic()` of the last infrastructure fault this worker met (0: none yet).
        self._last_fault = 0.0
        #: Tries resumed after an infrastructure fault, in-process and in the same attempt.
        self.ridden_out = 0

    def __repr__(self) -> str:
        return (
            f"<Worker {self.worker_id} running={len(self._running)}/{self.concurrency} "
            f"claimed={self.claimed} succeeded={self.succeeded} failed={self.failed} "
            f"cancelled={self.cancelled} recovered={self.recovered} ridden_out={self.ridden_out}>"
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming in the background. Returns once the worker listens for wake-ups."""
        listening = asyncio.Event()
        self._background = [
            asyncio.create_task(self._claim_loop(listening), name=f"runplane-claim-{self.worker_id}"),
            asyncio.create_task(self._recovery_loop(), name=f"runplane-recover-{self.worker_id}"),
        ]
        await listening.wait()
        # Listening for cancel hints too: a run claimed at its admission is covered from the start.
        self.manager.take_runs_here(self)

    async def stop(self) -> None:
        """Stop claiming, let running runs finish for `shutdown_grace`, then cancel them and hand
        them back to the queue (another worker resumes them from their last checkpoint)."""
        self._stopping = True
        if self.manager.taking_runs is self:
            self.manager.take_runs_here(None)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._running:
            await asyncio.wait(set(self._running), timeout=self.shutdown_grace)
        for attempt in list(self._attempts.values()):
            attempt.halt("shutdown")
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    # -- runs claimed at their admission (`TakesRunsAtAdmission`) ---------------------------------

    async def reserve_slot(self) -> bool:
        if self._stopping or self._slots.locked():
            return False
        await self._slots.acquire()  # free: taken at once
        return True

    def release_slot(self) -> None:
        self._slots.release()

    def start_claimed(self, run: Run) -> bool:
        if self._stopping:  # stopped during the admission
            self._slots.release()
            return False
        self._start(run)
        return True

    async def run_until_idle(self) -> None:
        """Burst mode (tests, scripts): recover, then claim and execute until nothing is claimable
        and nothing runs. Runs not yet due (`after_seconds`) are left in the queue."""
        async with self._listening_for_cancels():
            await self._recover()
            while True:
                while not self._slots.locked() and (await self._claim_one()).run is not None:
                    pass
                if not self._running:
                    return
                await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)

    @contextlib.asynccontextmanager
    async def _listening_for_cancels(self) -> AsyncIterator[None]:
        """Hear cancel hints for every run this worker holds, from before it claims one."""
        async with self.manager.cancel_hints(self.worker_id) as hints:

            async def pump() -> None:
                async for run_id in hints:
                    self._hinted_cancel(run_id)

            pumping = asyncio.create_task(pump())
            try:
                yield
            finally:
                pumping.cancel()

    def _hinted_cancel(self, run_id: str) -> None:
        # The hint only says "look": the durable request in the store decides what to do.
        attempt = self._attempts.get(run_id)
        if attempt is not None and attempt.watched:
            attempt.watchers.append(asyncio.create_task(attempt.check()))
            return
        # Claimed, and not executing yet: `_execute` looks once it watches the attempt.
        self._early_cancels[run_id] = None
        if len(self._early_cancels) > EARLY_CANCELS:
            del self._early_cancels[next(iter(self._early_cancels))]

    # -- claiming ---------------------------------------------------------------------------------

    async def _claim_loop(self, listening: asyncio.Event) -> None:
        # Listen first, then look at the queue: a run created after this point always wakes us.
        async with self.manager.new_run_hints() as hints, self._listening_for_cancels():
            pump = asyncio.create_task(self._pump(hints))
            listening.set()
            try:
                await self._recover()
                polling = False  # this claim comes from the fallback poll, not from a wake-up
                while not self._stopping:
                    await self._slots.acquire()
                    self._slots.release()  # _claim_one takes the slot for the run it claims
                    # Cleared before claiming: a hint that arrives during the claim wakes us again.
                    self._wake.clear()
                    hinted, self._hinted = self._hinted, False
                    claim = await self._claim_one()
                    if claim.run is None and hinted and claim.contended:
                        claim = await self._reclaim_after_hint()
                    if claim.run is not None:
                        self.polled += polling
                        polling = False
                        if claim.more:
                            # The claim saw another claimable run: claim again at once. Keep the
                            # hint it consumed: it may be that run's, on a thread another
                            # transaction holds, and then the next claim must look again shortly.
                            self._hinted = self._hinted or hinted
                            continue
                    # Nothing (else) was claimable when the claim looked, in its own transaction.
                    # What becomes claimable later wakes us: a run admitted or handed back after
                    # that look commits after it and only then sends its hint, which the pump
                    # (listening since before our first look) turns into `_wake`, cleared before
                    # the claim began; a run that a finish of ours unblocked sets `_wake` itself
                    # (`_unblocked`); a delayed run coming due waits for the poll.
                    polling = not await self._woken_within(self.poll_interval)
            finally:
                pump.cancel()

    async def _pump(self, hints: AsyncIterator[str]) -> None:
        async for message in hints:
            if is_taken_hint(message):
                continue  # a run its admission claimed, here or elsewhere: nothing to claim
            self._hinted = True
            self._wake.set()

    async def _woken_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
                return True
        return False

    async def _reclaim_after_hint(self) -> Claimed:
        """A hint came, and the claim passed a due run over: its thread was locked by another
        transaction, and no second hint comes when that one ends. Look again shortly a few times
        (push, not poll: without this the run would wait for the fallback poll), as long as the
        claims find a due run passed over; a claim that finds none has nothing left to wait for
        (another worker took the run). Returns the claim that took a run, or one that took none."""
        for pause in self.claim_retry_seconds:
            if await self._woken_within(pause):
                return Claimed(None)  # a new hint or a finished run: the main loop claims at once
            claim = await self._claim_one()
            if claim.run is not None or not claim.contended:
                return claim
        return Claimed(None)

    async def _claim_one(self) -> Claimed:
        """Claim one run and start executing it. Returns the claim (`Claimed.more`: whether another
        run was claimable as it saw the queue)."""
        await self._slots.acquire()
        claim = asyncio.ensure_future(self.manager.claim_and_look(self.worker_id))
        try:
            claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            # Stopped mid-claim: the store may have given us a run already. Hand it straight
            # back rather than leave it leased to nobody until the lease expires.
            self._slots.release()
            with contextlib.suppress(Exception):
                if (late := (await claim).run) is not None:
                    await self.manager.release(late)
            raise
        except Exception as exc:
            self._slots.release()
            self._fault_seen(exc, "claim failed")
            # It saw nothing of the queue: after a hint, look again shortly, as after a run
            # passed over.
            return Claimed(None, contended=True)
        run = claimed.run
        if run is None:
            self._slots.release()
            return claimed
        self._start(run)
        return claimed

    def _start(self, run: Run) -> None:
        """Execute `run`, claimed for this worker, in the slot taken for it."""
        self.claimed += 1
        task = asyncio.create_task(self._process(run), name=f"runplane-run-{run.run_id}")
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        # A free slot alone is no reason to claim: a run this one's end made claimable wakes the
        # claim loop (`_unblocked`), hints wake it for the rest, and a claim that saw more waits
        # for this slot to claim it.
        self._slots.release()

    def _unblocked(self) -> None:
        """A run's end made (or may have made) its thread's next run claimable: no hint says so,
        so this worker's claim loop looks at once (FIFO per thread)."""
        self._wake.set()

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recovery_interval)
            await self._recover()

    async def _recover(self) -> None:
        if time.monotonic() - self._last_fault < OUTAGE_GRACE_SECONDS and self._last_fault:
            # Just back from an outage: leases expired meanwhile may belong to live workers that
            # are about to renew them; recovering now would charge those runs an attempt.
            return
        try:
            self.recovered += len(await self.manager.recover_expired())
        except Exception as exc:
            self._fault_seen(exc, "recovering expired runs failed")

    def _fault_seen(self, exc: BaseException, what: str, run_id: str | None = None) -> None:
        """Log a failed store call: briefly for an infrastructure fault (expected while a dependency
        is down, and retried), with the traceback otherwise."""
        extra: dict[str, Any] = (
            {"action": "fault"} if run_id is None else {"action": "fault", "run_id": run_id}
        )
        if faults.is_infrastructure(exc):
            self._last_fault = time.monotonic()
            logger.warning("%s: %s: %s", what, type(exc).__name__, exc, extra=extra)
        else:
            logger.error("%s", what, exc_info=exc, extra=extra)

    # -- one run ----------------------------------------------------------------------------------

    async def _process(self, run: Run) -> None:
        bind_run(run, self.worker_id)  # this task is the run's: every log record in it names the run
        attempt = Attempt(run, self.manager, self.worker_id, self._fault_seen)
        self._attempts[run.run_id] = attempt
        try:

            def execution_of(retry: bool) -> Execution:
                return Execution(
                    run,
                    self.runtime,
                    attempt.publish,
                    attempt.progress,
                    attempt.hold,
                    attempt.writes_committed,
                    default_timeout=self.default_timeout,
                    retry=retry,
                )

            if run.cancel_action is not None:
                # Claimed with a cancel already pending (its previous worker died or was stopped
                # before acting on it): perform the cancel, never execute.
                ended = await self._cancel(attempt, execution_of(False), run.cancel_action)
            else:
                ended = await self._execute(attempt, execution_of)
            if ended and run.kwargs.temporary:
                await self._forget(run)
        except Exception:
            logger.exception(
                "run %s: worker failure", run.run_id, extra={"action": "run", "run_id": run.run_id}
            )
            self._unblocked()  # how the run ended is unknown: look rather than leave a run waiting
        finally:
            del self._attempts[run.run_id]
            self._early_cancels.pop(run.run_id, None)

    async def _execute(self, attempt: Attempt, execution_of: Callable[[bool], Execution]) -> bool:
        """Execute the attempt while keeping its lease and listening for cancels; then settle it.

        An infrastructure fault does not end the attempt: it pauses, waits with backoff until the
        store and the checkpointer answer again and the lease is still its own, and continues from
        its last checkpoint (steps already checkpointed are not run again), in the same attempt.
        """
        run = attempt.run
        execution = execution_of(False)
        await attempt.publish("metadata", {"run_id": run.run_id, "attempt": run.attempt})
        attempt.watchers.append(asyncio.create_task(attempt.heartbeat(self.heartbeat_seconds)))
        attempt.watched = True
        if run.run_id in self._early_cancels:  # hinted before it was watched
            del self._early_cancels[run.run_id]
            attempt.watchers.append(asyncio.create_task(attempt.check()))
        outcome: Outcome | None = None
        try:
            while True:
                attempt.task = asyncio.create_task(execution.execute())
                if attempt.stop is not None:
                    attempt.task.cancel()  # stopped (shutdown) while it was being set up
                try:
                    outcome = await attempt.task
                    break
                except asyncio.CancelledError:
                    if attempt.stop is None:
                        # Our own task was cancelled, not the execution: never leave it running.
                        attempt.task.cancel()
                        raise
                    break
                except InfrastructureFault as fault:
                    self._fault_seen(
                        fault, f"run {run.run_id}: paused by an infrastructure fault", run.run_id
                    )
                    # What failed of its writes is forgotten: the retry continues from what landed.
                    await attempt.writes_settled()
                    if not await self._ride_out(attempt, execution):
                        break
                    self.ridden_out += 1
                    logger.info(
                        "run %s: dependency back; attempt %d continues from its last checkpoint",
                        run.run_id,
                        run.attempt,
                        extra={"action": "resume", "run_id": run.run_id},
                    )
                    execution = execution_of(True)
        finally:
            attempt.watched = False
            for watcher in attempt.watchers:
                watcher.cancel()
        return await self._settle(attempt, execution, outcome)

    async def _ride_out(self, attempt: Attempt, execution: Execution) -> bool:
        """Wait, with backoff and jitter, until the attempt may continue: the lease renews (the
        store answers and no one took the run over) and the checkpointer reads. False when it must
        stop instead (lease lost, cancel requested, worker stopping): nothing more is written."""
        backoff = faults.Backoff()
        saver = self.runtime.checkpointer
        root: Any = {"configurable": {"thread_id": attempt.run.thread_id, "checkpoint_ns": ""}}
        while attempt.stop is None and not self._stopping:
            await asyncio.sleep(backoff.next())
            try:
                await attempt.check(quiet=False)
                if attempt.stop is not None:
                    break
                async with asyncio.timeout(PROBE_SECONDS):  # a checkout may wait on a pool
                    await saver.aget_tuple(root)
            except Exception as exc:
                if not (isinstance(exc, TimeoutError) or faults.is_infrastructure(exc)):
                    raise
                self._last_fault = time.monotonic()
                continue
            return True
        if self._stopping and attempt.stop is None:
            attempt.stop = "shutdown"
        return False

    async def _persist(self, attempt: Attempt, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` again, with backoff, while it fails for an infrastructure fault: the outcome of
        an attempt is written once the store is back, not lost, and the run not charged for it.
        Gives up (re-raises) only once the worker is stopping."""
        backoff = faults.Backoff()
        while True:
            try:
                return await call()
            except Exception as exc:
                if not faults.is_infrastructure(exc) or self._stopping:
                    raise
                self._fault_seen(
                    exc, f"run {attempt.run.run_id}: {what} failed; retrying", attempt.run.run_id
                )
            await asyncio.sleep(backoff.next())

    async def _settle(self, attempt: Attempt, execution: Execution, outcome: Outcome | None) -> bool:
        """Write how the attempt ended, unless its lease is lost (then another attempt owns it).
        True when the run reached its end (a hand-back or a lost lease is not one)."""
        run = attempt.run
        if outcome is not None and attempt.stop is None:
            # Its last writes commit with the outcome (`Execution.ended` left them to the finish).
            # A cancel requested, or the lease lost, meanwhile is the store's to say: it refuses.
            return await self._finish(attempt, execution, outcome)
        # Its writes acknowledged early land (or fail) before anything reads, rolls back or hands
        # back the thread: a late commit after a rollback would bring a checkpoint back.
        await attempt.writes_settled()
        if attempt.fenced:
            logger.warning("run %s: lease lost; dropped attempt %d", run.run_id, run.attempt)
            return False
        if attempt.stop == "shutdown":
            with contextlib.suppress(LeaseLost, NotFound):
                await self.manager.release(run)
            return False
        if attempt.stop in ("interrupt", "rollback"):
            return await self._cancel(attempt, execution, attempt.stop)
        return False  # stopped by a fault it could not ride out: the lease decides who resumes

    async def _finish(self, attempt: Attempt, execution: Execution, outcome: Outcome) -> bool:
        """Write the outcome of an attempt that ran to its end; True unless its lease was lost."""
        run = attempt.run
        try:
            finished = await self._persist(
                attempt, "finishing", lambda: self.manager.finish_and_look(run, outcome)
            )
        except CancelRequested as exc:
            # The cancel request was written before our outcome: it wins, we take its path.
            return await self._cancel(
                attempt, execution, "rollback" if exc.action == "rollback" else "interrupt"
            )
        except (LeaseLost, NotFound):
            logger.warning("run %s: lease lost before finishing attempt %d", run.run_id, run.attempt)
            return False
        if finished.next_claimable:
            self._unblocked()
        if outcome.status == "success":
            self.succeeded += 1
        else:
            self.failed += 1
        return True

    async def _cancel(self, attempt: Attempt, execution: Execution, action: CancelAction) -> bool:
        """End a run whose cancel was requested: interrupted (checkpoints kept) or rolled back."""
        run = attempt.run
        try:
            # Still ours? (a rollback deletes checkpoints, which no lease fences) And an interrupt
            # may have been upgraded to a rollback meanwhile: the store says which.
            upgraded: CancelAction | None = await self._persist(
                attempt, "renewing", lambda: self.manager.renew(run, self.worker_id)
            )
            action = upgraded or action
            if action == "rollback":
                await self._persist(attempt, "rolling back", execution.rollback)
                await self._persist(attempt, "discarding", lambda: self.manager.discard(run))
                self._unblocked()  # rare (a rollback): look rather than ask the store
            else:
                interrupted = await execution.interrupted()
                finished = await self._persist(
                    attempt, "finishing", lambda: self.manager.finish_and_look(run, interrupted)
                )
                if finished.next_claimable:
                    self._unblocked()  # the run that interrupted this one (multitask `interrupt`)
        except (LeaseLost, NotFound):
            return False
        self.cancelled += 1
        return True

    async def _forget(self, run: Run) -> None:
        """Delete a stateless run's own thread (`temporary`) now that the run has ended: its record,
        runs and checkpoints, as LangGraph's server does. The stream was ended by the finish."""
        with contextlib.suppress(NotFound):
            await self.manager.delete_thread(run.thread_id, run.owner)
        await self.runtime.delete_thread(run.thread_id)
