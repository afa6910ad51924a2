"""Event buses, chosen by URL. redis-py and psycopg are imported lazily (optional extras)."""

from __future__ import annotations

import importlib
from typing import cast

from runplane.core.errors import InvalidInput
from runplane.core.events import EventBus

BACKENDS = {
    "memory": "runplane.events.memory:InMemoryBus",
    "redis": "runplane.events.redis:RedisBus",
    "rediss": "runplane.events.redis:RedisBus",
    "postgresql": "runplane.events.postgres:PostgresBus",
    "postgres": "runplane.events.postgres:PostgresBus",
}
#: The optional extra each backend needs.
_EXTRAS = {"redis": "redis", "rediss": "redis", "postgresql": "postgres", "postgres": "postgres"}


def open_bus(url: str | None = None) -> EventBus:
    """An event bus: in-process by default; `redis://host:port/db`, or the store's
    `postgresql://...` database, to share one across processes."""
    url = url or "memory://"
    scheme = url.partition(":")[0].lower().split("+", 1)[0]
    target = BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(
            f"unsupported event bus URL scheme {scheme!r}; expected memory://, redis:// or postgresql://"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = _EXTRAS[scheme]
        raise InvalidInput(
            f"the {scheme} bus needs an optional dependency: pip install 'runplane[{extra}]' ({exc})"
        ) from exc
    bus = cast(EventBus, getattr(module, class_name).from_url(url))
    if scheme == "memory":
        return bus
    # A shared bus can go down; its outage must degrade runplane, not fail runs.
    from runplane.events.resilient import ResilientBus

    return ResilientBus(bus)
