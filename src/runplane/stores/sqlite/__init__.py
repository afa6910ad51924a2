"""The embedded SQLite store (the default backend)."""

from __future__ import annotations

from runplane.stores.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
