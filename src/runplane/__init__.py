"""runplane: a durable run manager and LangGraph-compatible server for AI-agent runs.

Embedded in an application (see docs/embedding.md):

    async with runplane.open(database_url="sqlite:///app.db", graphs={"agent": graph}) as rp:
        run = await rp.runs.create(thread_id, "agent", user=user_id, input=..., if_not_exists="create")

`import runplane` stays light: `open`, `Runplane`, `Runs`, `Threads` and `sse_response` (which bring in
LangGraph and Starlette) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runplane._version import VERSION
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
from runplane.core.events import StreamEvent
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Run, Thread, TokenUsage

if TYPE_CHECKING:
    from runplane.embedded import Runplane, open
    from runplane.facade import Runs, Threads
    from runplane.streaming import sse_response

__version__ = VERSION

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
    "Runplane",
    "RunplaneError",
    "Runs",
    "StoreUnavailable",
    "StreamEvent",
    "Thread",
    "ThreadBusy",
    "Threads",
    "TokenUsage",
    "__version__",
    "open",
    "sse_response",
]

#: Public names imported on first use: name -> module.
_LAZY = {
    "Runplane": "runplane.embedded",
    "open": "runplane.embedded",
    "Runs": "runplane.facade",
    "Threads": "runplane.facade",
    "sse_response": "runplane.streaming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runplane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
