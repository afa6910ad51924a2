"""Every error runplane raises on purpose. The class docstring is the default message.

RunplaneError
├── NotFound            unknown id, or an id that belongs to another owner (never "forbidden")
├── ThreadBusy          `reject` strategy on a thread with an active run
│   └── ThreadReserved  a state update holds the thread for a moment (admission waits for it)
├── Conflict            duplicate id, idempotency key replayed with another payload
│   └── SlotTaken       a cron slot another scheduler already fired
├── InvalidInput        a request the core refuses to act on
├── InvalidTransition   a status change the lifecycle table forbids
├── LeaseLost           a worker's claim is no longer current (expired, or a newer attempt holds it)
├── CancelRequested     a worker tried to finish a run whose cancel won the race
├── StoreUnavailable    the backing database failed in a way the caller cannot fix
│   └── InfrastructureFault   a run's attempt met a dependency failure (not the run's fault)
└── GraphUnavailable    the graph a request names failed to load when the server started
"""

from __future__ import annotations


class RunplaneError(Exception):
    """Runplane failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFound(RunplaneError):
    """Not found."""


class ThreadBusy(RunplaneError):
    """The thread already has an active run."""


class ThreadReserved(ThreadBusy):
    """A state update holds the thread: no run is admitted on it until the update ends."""


class Conflict(RunplaneError):
    """The request conflicts with the current state."""


class InvalidInput(RunplaneError):
    """The request is invalid."""


class InvalidTransition(RunplaneError):
    """That status change is not allowed."""


class LeaseLost(RunplaneError):
    """The worker no longer holds this run."""


class CancelRequested(RunplaneError):
    """A cancel request won over completion."""

    def __init__(self, action: str, message: str | None = None) -> None:
        super().__init__(message or f"cancel ({action}) requested")
        self.action = action


class StoreUnavailable(RunplaneError):
    """The store is unavailable."""


class GraphUnavailable(RunplaneError):
    """The graph failed to load."""


class SlotTaken(Conflict):
    """Another scheduler already fired this cron slot."""


class AssistantChanged(Conflict):
    """The assistant changed since it was read for this run (`NewRun.assistant_seen`); nothing was
    written. The caller reads it again and builds the run anew."""


class InfrastructureFault(StoreUnavailable):
    """A dependency (database, event bus, checkpointer) failed; the run did not."""
