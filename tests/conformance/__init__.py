"""One behaviour suite for every `Store` backend; `InMemoryStore` is the reference."""

from __future__ import annotations
