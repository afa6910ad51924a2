"""Paging limits and new ids, shared by the manager's use-cases."""

from __future__ import annotations

import uuid

from runplane.core.errors import InvalidInput

#: The largest page any listing returns.
MAX_LIMIT = 1000


def new_id() -> str:
    return str(uuid.uuid4())


def check_page(limit: int, offset: int) -> None:
    """Refuse (`InvalidInput`) a page outside `0 <= limit <= MAX_LIMIT`, `offset >= 0`."""
    if not 0 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 0 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidInput("offset must be >= 0")
