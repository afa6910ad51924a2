"""runplane: a durable run manager and LangGraph-compatible server for AI-agent runs."""

from __future__ import annotations

from runplane.core.errors import (
    CancelRequested,
    Conflict,
    InvalidInput,
    InvalidTransition,
    LeaseLost,
    NotFound,
    RunplaneError,
    StoreUnavailable,
    ThreadBusy,
)
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Run, Thread, TokenUsage

__version__ = "0.1.0"

__all__ = [
    "CancelRequested",
    "Conflict",
    "InvalidInput",
    "InvalidTransition",
    "LeaseLost",
    "ManagerSettings",
    "NotFound",
    "Run",
    "RunManager",
    "RunplaneError",
    "StoreUnavailable",
    "Thread",
    "ThreadBusy",
    "TokenUsage",
    "__version__",
]
