"""What LangGraph's server hands `@auth.on.assistants` and `@auth.on.store` handlers
(`langgraph_sdk.auth.types`), for the routes of `api/assistants.py` and `api/store.py`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def assistant_value(action: str, path: Mapping[str, str], given: Mapping[str, Any]) -> dict[str, Any]:
    """`AssistantsCreate` / `AssistantsUpdate` / `AssistantsRead` / `AssistantsDelete` /
    `AssistantsSearch`, from the path and the request body."""
    assistant_id = path.get("assistant_id")
    if action == "create":
        return {
            "assistant_id": given.get("assistant_id"),
            "graph_id": given.get("graph_id"),
            "config": dict(given.get("config") or {}),
            "context": given.get("context"),
            "metadata": dict(given.get("metadata") or {}),
            "name": given.get("name"),
        }
    if action == "update":
        value: dict[str, Any] = {"assistant_id": assistant_id}
        for key in ("graph_id", "config", "context", "name", "version"):
            if key in given:
                value[key] = given[key]
        value["metadata"] = dict(given.get("metadata") or {})
        return value
    if action == "search":
        value = {k: given[k] for k in ("graph_id", "metadata", "name") if k in given}
        value.update(limit=given.get("limit", 10), offset=given.get("offset", 0))
        return value
    return {"assistant_id": assistant_id}
