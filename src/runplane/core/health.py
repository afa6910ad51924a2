"""Readiness: whether the dependencies a `RunManager` stands on (database, event bus) answer now."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from runplane.core.errors import NotFound
from runplane.core.manager import RunManager
from runplane.core.models import SINGLE_USER

logger = logging.getLogger(__name__)


@runtime_checkable
class SupportsPing(Protocol):
    """A store or bus that can tell whether its server answers (`RedisBus`)."""

    async def ping(self) -> None:
        """Return when the server answered; raise `StoreUnavailable` otherwise."""
        ...


#: A thread id no one can own: looking it up exercises the store without matching anything.
_PROBE_THREAD = "00000000-0000-0000-0000-000000000000"


async def check_dependencies(manager: RunManager, timeout: float = 3.0) -> dict[str, bool]:
    """Readiness: whether the database (and the event bus, when it has a server) answer, each
    within `timeout` seconds. Never raises for a dependency's failure."""

    async def database() -> None:
        try:
            await manager.store.get_thread(_PROBE_THREAD, SINGLE_USER)
        except NotFound:
            pass

    checks: dict[str, Callable[[], Awaitable[None]]] = {"database": database}
    if isinstance(manager.bus, SupportsPing):
        checks["redis"] = manager.bus.ping

    async def healthy(name: str, check: Callable[[], Awaitable[None]]) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await check()
        except Exception as exc:
            logger.warning("readiness: %s is unavailable: %s", name, exc, extra={"action": "ready"})
            return False
        return True

    results = await asyncio.gather(*(healthy(name, check) for name, check in checks.items()))
    return dict(zip(checks, results, strict=True))
