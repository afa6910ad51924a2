"""Event buses, chosen by URL. redis-py is imported lazily (optional extra)."""

from __future__ import annotations

import importlib
from typing import cast

from runplane.core.errors import InvalidInput
from runplane.core.events import EventBus

BACKENDS = {
    "memory": "runplane.events.memory:InMemoryBus",
    "redis": "runplane.events.redis:RedisBus",
    "rediss": "runplane.events.redis:RedisBus",
}


def open_bus(url: str | None = None) -> EventBus:
    """An event bus: in-process by default, `redis://host:port/db` to share one across processes."""
    url = url or "memory://"
    scheme = url.partition(":")[0].lower()
    target = BACKENDS.get(scheme)
    if target is None:
        raise InvalidInput(f"unsupported event bus URL scheme {scheme!r}; expected memory:// or redis://")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInput(
            f"the redis bus needs an optional dependency: pip install 'runplane[redis]' ({exc})"
        ) from exc
    return cast(EventBus, getattr(module, class_name).from_url(url))
