"""Giving freed memory back to the operating system.

CPython frees a run's large objects (inputs, states, encoded events) as soon as the run is done,
but glibc's allocator keeps the freed pages mapped in its arenas (one per thread that allocated,
and aiosqlite and LangGraph allocate on their own threads), so the process's RSS stays at its
peak for as long as it lives. `malloc_trim(0)` returns the free pages of every arena. Elsewhere
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim: Callable[[int], Any] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
        return trim
    except OSError:
        return None


_TRIM = _malloc_trim()


def give_back_free_memory() -> None:
    """Return the allocator's free pages to the OS (glibc); a no-op where that is not possible."""
    if _TRIM is not None:
        try:
            _TRIM(0)
        except Exception:  # pragma: no cover - a libc without it behaves like one that has nothing to give
            logger.debug("malloc_trim failed", exc_info=True)
