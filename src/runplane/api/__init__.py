"""The HTTP API: LangGraph Platform-compatible routes over a `RunManager` and a `GraphRuntime`."""

from __future__ import annotations

from runplane.api.app import create_app
from runplane.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
