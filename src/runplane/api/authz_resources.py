"""What LangGraph's server hands `@auth.on.assistants` and `@auth.on.store` handlers
(`langgraph_sdk.auth.types`), for the routes of `api/assistants.py` and `api/store.py`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
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


def store_value(action: str, call: Any) -> dict[str, Any]:
    """The value LangGraph's server hands `@auth.on.store` handlers (`Auth.types.on.store.*`)."""
    if action == "get":
        query = call.query
        return {
            "namespace": tuple(query.namespace.split(".")),
            "key": query.key,
            "refresh_ttl": query.refresh_ttl,
        }
    body = call.body
    if action == "put":
        return {
            "namespace": tuple(body.namespace),
            "key": body.key,
            "value": body.value,
            "index": body.index,
            "ttl": body.ttl,
        }
    if action == "delete":
        return {"namespace": tuple(body.namespace), "key": body.key}
    if action == "search":
        return {
            "namespace": tuple(body.namespace_prefix or ()),
            "filter": body.filter,
            "limit": body.limit,
            "offset": body.offset,
            "query": body.query,
            "refresh_ttl": body.refresh_ttl,
        }
    return {
        "namespace": tuple(body.prefix) if body.prefix else None,
        "suffix": tuple(body.suffix) if body.suffix else None,
        "max_depth": body.max_depth,
        "limit": body.limit,
        "offset": body.offset,
    }


def _labels(namespace: Any) -> Any:
    # A handler may set a list or a tuple; the wire models hold lists.
    return list(namespace) if isinstance(namespace, list | tuple) else namespace


def store_call(call: Any, action: str, value: Mapping[str, Any], result: Mapping[str, Any] | None) -> Any:
    """`call` as the handler left it: LangGraph's handlers rewrite namespaces in place (to scope a
    user's items), and a search handler's filter narrows the search."""
    namespace = value.get("namespace")
    if action == "get":
        joined = ".".join(namespace) if isinstance(namespace, list | tuple) else namespace
        return replace(call, query=call.query.model_copy(update={"namespace": joined}))
    if action in ("put", "delete"):
        update: dict[str, Any] = {"namespace": _labels(namespace)}
        if action == "put":
            update.update(key=value.get("key"), value=value.get("value"))
        return replace(call, body=call.body.model_copy(update=update))
    if action == "search":
        update = {"namespace_prefix": _labels(namespace)}
        if result:
            update["filter"] = {**(call.body.filter or {}), **result}
            conflict = any(
                k in (call.body.filter or {}) and call.body.filter[k] != v for k, v in result.items()
            )
            if conflict:  # nothing can match both
                update["limit"] = 0
        return replace(call, body=call.body.model_copy(update=update))
    update = {"prefix": _labels(namespace), "suffix": _labels(value.get("suffix"))}
    return replace(call, body=call.body.model_copy(update=update))
