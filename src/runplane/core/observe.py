"""What the manager and the workers report as they go, for metrics: an `Observer` protocol, a no-op
default, and a store wrapper that times every store operation.

The core only *calls* an observer; the Prometheus implementation lives outside it
(`runplane.api.metrics`), so the core stays free of I/O libraries. Every hook must be cheap and
must never raise: a broken metrics backend may not fail a run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, cast

from runplane.core.models import CancelAction, Run
from runplane.core.store import Store

logger = logging.getLogger(__name__)

StoreOutcome = Literal["ok", "error"]


def graph_of(run: Run) -> str:
    """The graph a run executes (what metrics are labelled by): the API stores it in `kwargs`."""
    graph = run.kwargs.graph_id
    return graph if isinstance(graph, str) and graph else run.assistant_id


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


class Observer(Protocol):
    """Receives what happens to runs in this process. Implementations must not raise."""

    def run_created(self, run: Run) -> None:
        """A run was admitted (not called for an idempotent replay)."""

    def run_started(self, run: Run) -> None:
        """A worker of this process claimed `run` (`run.attempt` is the attempt it starts)."""

    def run_finished(self, run: Run) -> None:
        """A run reached a terminal status in this process (`run` is the final record)."""

    def run_discarded(self, run: Run) -> None:
        """A running run was rolled back and deleted by its worker."""

    def cancel_requested(self, action: CancelAction) -> None:
        """A caller asked this process to cancel a run."""

    def lease_recovered(self, run: Run) -> None:
        """A run whose worker stopped renewing its lease was settled (`run` is the new record)."""

    def event_published(self, run: Run, event: str) -> None:
        """A worker published one stream event of `run`."""

    def store_operation(self, operation: str, seconds: float, outcome: StoreOutcome) -> None:
        """One store call ended."""

    def webhook_delivered(self, ok: bool) -> None:
        """A run's webhook was called (`ok`: it answered 2xx)."""

    def cron_fired(self) -> None:
        """A cron created its run."""


class NullObserver:
    """Observes nothing: the default when no metrics are configured."""

    def run_created(self, run: Run) -> None:
        pass

    def run_started(self, run: Run) -> None:
        pass

    def run_finished(self, run: Run) -> None:
        pass

    def run_discarded(self, run: Run) -> None:
        pass

    def cancel_requested(self, action: CancelAction) -> None:
        pass

    def lease_recovered(self, run: Run) -> None:
        pass

    def event_published(self, run: Run, event: str) -> None:
        pass

    def store_operation(self, operation: str, seconds: float, outcome: StoreOutcome) -> None:
        pass

    def webhook_delivered(self, ok: bool) -> None:
        pass

    def cron_fired(self) -> None:
        pass


class ObservedStore:
    """A `Store` whose every async operation is timed and reported to an observer.

    Wraps by name, so store methods added later are observed too, and capability checks
    (`isinstance(store, SupportsCheckpointerUrl)`) see the inner store's attributes.
    """

    def __init__(self, inner: Store, observer: Observer) -> None:
        self.inner = inner
        self.observer = observer
        #: name -> (the inner method's function and owner, its timed wrapper): every store call
        #: looks its method up here, and wrapping anew each time cost more than the lookup.
        self._wrappers: dict[str, tuple[Any, Any, Callable[..., Awaitable[Any]]]] = {}

    def __repr__(self) -> str:
        return f"<ObservedStore {self.inner!r}>"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        # Keyed by the function, not the bound method (a new object at each lookup): a method
        # replaced on the inner store (a test's fault injection) gets a wrapper of its own.
        function, owner = getattr(attr, "__func__", attr), getattr(attr, "__self__", None)
        cached = self._wrappers.get(name)
        if cached is not None and cached[0] is function and cached[1] is owner:
            return cached[2]
        if name in ("open", "close") or not inspect.iscoroutinefunction(attr):
            return attr
        timed = self._timed(name, attr)
        self._wrappers[name] = (function, owner, timed)
        return timed

    def _timed(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        observer = self.observer

        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            outcome: StoreOutcome = "error"
            try:
                result = await method(*args, **kwargs)
                outcome = "ok"
                return result
            finally:
                observer.store_operation(name, time.perf_counter() - started, outcome)

        return timed


def observed(store: Store, observer: Observer) -> Store:
    """`store` with its operations reported to `observer`."""
    return cast(Store, ObservedStore(store, observer))


# -- the run a log record belongs to ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunContext:
    """The run the current task executes: added to every log record written inside it."""

    run_id: str
    thread_id: str
    attempt: int
    worker_id: str


#: Set by the worker in the task that executes a run; tasks it starts inherit it (asyncio copies
#: the context), so the graph's own log records carry the run too.
CURRENT_RUN: ContextVar[RunContext | None] = ContextVar("runplane_current_run", default=None)


def bind_run(run: Run, worker_id: str) -> None:
    """Mark the current task (and the tasks it starts) as executing `run`'s current attempt."""
    CURRENT_RUN.set(RunContext(run.run_id, run.thread_id, run.attempt, worker_id))
