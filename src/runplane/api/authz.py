"""Authorization with LangGraph's `@auth.on` handlers (custom auth), on every route.

For each route (`ACCESS` gives its resource and action), the most specific handler runs with the
request's value, as on LangGraph's server. It may deny (False, or `Auth.exceptions.HTTPException`),
stamp the value's `metadata` (applied to the thread or run being created or updated), or return a
metadata filter. Filters restrict what the caller sees on top of owner isolation: a thread whose
metadata does not match is reported missing (404, exactly as if it did not exist), runs follow
their thread, and searches return only matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from langgraph_sdk.auth import Auth
from langgraph_sdk.auth.exceptions import HTTPException as AuthHTTPException
from langgraph_sdk.auth.types import AuthContext
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from runplane.api.auth import ANONYMOUS, PUBLIC_PATHS, USER_SCOPE_KEY
from runplane.api.authz_resources import assistant_value, store_call, store_value
from runplane.api.errors import ApiError
from runplane.api.routing import Call, Endpoint
from runplane.core.errors import Conflict, NotFound

#: Each route's (resource, action) for `@auth.on` handlers, as on LangGraph's server: runs belong
#: to their thread (reading, listing, cancelling and deleting them are thread actions).
ACCESS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("POST", "/assistants/search"): ("assistants", "search"),
    ("POST", "/assistants/count"): ("assistants", "search"),
    ("GET", "/assistants/{assistant_id}"): ("assistants", "read"),
    ("GET", "/assistants/{assistant_id}/graph"): ("assistants", "read"),
    ("GET", "/assistants/{assistant_id}/schemas"): ("assistants", "read"),
    ("GET", "/assistants/{assistant_id}/subgraphs"): ("assistants", "read"),
    ("GET", "/assistants/{assistant_id}/subgraphs/{namespace}"): ("assistants", "read"),
    ("POST", "/assistants"): ("assistants", "create"),
    ("PATCH", "/assistants/{assistant_id}"): ("assistants", "update"),
    ("DELETE", "/assistants/{assistant_id}"): ("assistants", "delete"),
    ("POST", "/assistants/{assistant_id}/versions"): ("assistants", "read"),
    ("POST", "/assistants/{assistant_id}/latest"): ("assistants", "update"),
    ("POST", "/threads/prune"): ("threads", "delete"),
    ("GET", "/threads/{thread_id}/stream"): ("threads", "read"),
    ("GET", "/threads/{thread_id}/storage"): ("threads", "read"),
    ("PUT", "/store/items"): ("store", "put"),
    ("GET", "/store/items"): ("store", "get"),
    ("DELETE", "/store/items"): ("store", "delete"),
    ("POST", "/store/items/search"): ("store", "search"),
    ("POST", "/store/namespaces"): ("store", "list_namespaces"),
    ("POST", "/threads"): ("threads", "create"),
    ("POST", "/threads/search"): ("threads", "search"),
    ("POST", "/threads/count"): ("threads", "search"),
    ("GET", "/threads/{thread_id}"): ("threads", "read"),
    ("PATCH", "/threads/{thread_id}"): ("threads", "update"),
    ("DELETE", "/threads/{thread_id}"): ("threads", "delete"),
    ("POST", "/threads/{thread_id}/copy"): ("threads", "read"),
    ("GET", "/threads/{thread_id}/state"): ("threads", "read"),
    ("POST", "/threads/{thread_id}/state"): ("threads", "update"),
    ("POST", "/threads/{thread_id}/state/checkpoint"): ("threads", "read"),
    ("GET", "/threads/{thread_id}/state/{checkpoint_id}"): ("threads", "read"),
    ("GET", "/threads/{thread_id}/history"): ("threads", "read"),
    ("POST", "/threads/{thread_id}/history"): ("threads", "read"),
    ("POST", "/threads/{thread_id}/runs"): ("threads", "create_run"),
    ("POST", "/threads/{thread_id}/runs/stream"): ("threads", "create_run"),
    ("POST", "/threads/{thread_id}/runs/wait"): ("threads", "create_run"),
    ("GET", "/threads/{thread_id}/runs"): ("threads", "search"),
    ("GET", "/threads/{thread_id}/runs/{run_id}"): ("threads", "read"),
    ("DELETE", "/threads/{thread_id}/runs/{run_id}"): ("threads", "delete"),
    ("POST", "/threads/{thread_id}/runs/{run_id}/cancel"): ("threads", "update"),
    ("GET", "/threads/{thread_id}/runs/{run_id}/join"): ("threads", "read"),
    ("GET", "/threads/{thread_id}/runs/{run_id}/stream"): ("threads", "read"),
    ("POST", "/runs/cancel"): ("threads", "update"),
    ("POST", "/runs"): ("threads", "create_run"),
    ("POST", "/runs/stream"): ("threads", "create_run"),
    ("POST", "/runs/wait"): ("threads", "create_run"),
    ("POST", "/runs/batch"): ("threads", "create_run"),
    ("POST", "/runs/crons"): ("crons", "create"),
    ("POST", "/threads/{thread_id}/runs/crons"): ("crons", "create"),
    ("POST", "/runs/crons/search"): ("crons", "search"),
    ("POST", "/runs/crons/count"): ("crons", "search"),
    ("GET", "/runs/crons/{cron_id}"): ("crons", "read"),
    ("PATCH", "/runs/crons/{cron_id}"): ("crons", "update"),
    ("DELETE", "/runs/crons/{cron_id}"): ("crons", "delete"),
    # Agent protocols (`api.protocols`): the route is authorized as what it exposes; each inner
    # operation is then authorized as the runs API route it stands for.
    ("POST", "/threads/{thread_id}/commands"): ("threads", "create_run"),
    ("POST", "/threads/{thread_id}/stream/events"): ("threads", "read"),
    ("POST", "/mcp"): ("assistants", "search"),
    ("GET", "/mcp"): ("assistants", "search"),
    ("DELETE", "/mcp"): ("assistants", "search"),
    ("POST", "/a2a/{assistant_id}"): ("assistants", "read"),
    ("GET", "/a2a/{assistant_id}"): ("assistants", "read"),
    ("GET", "/a2a/{assistant_id}/.well-known/agent-card.json"): ("assistants", "read"),
}

_OPERATORS = frozenset({"$eq", "$contains"})
#: Actions whose value's `metadata` is the resource's own (or a search on it), so a handler's
#: changes to it apply to the request. Elsewhere (history) a body's `metadata` means something else.
_STAMPED_ACTIONS = frozenset({"create", "create_run", "update", "search"})


def _condition(key: str, condition: Any) -> tuple[str, Any]:
    """A filter condition as `(operator, operand)`; a bare value means `$eq`.

    Raises:
        ValueError: an operator LangGraph does not define (refused rather than ignored).
    """
    if isinstance(condition, Mapping) and condition and all(str(k).startswith("$") for k in condition):
        if len(condition) != 1 or next(iter(condition)) not in _OPERATORS:
            raise ValueError(f"unsupported filter on {key!r}: {dict(condition)!r}")
        (operator, operand), *_ = condition.items()
        return str(operator), operand
    return "$eq", condition


def filter_matches(metadata: Mapping[str, Any], filters: Mapping[str, Any] | None) -> bool:
    """Whether `metadata` passes an authorization filter (every key must match; None passes all).

    `{"k": v}` and `{"k": {"$eq": v}}` need `metadata["k"] == v`; `{"k": {"$contains": v}}` needs
    `v` in the list `metadata["k"]` (every element of `v` when it is a list).
    """
    for key, condition in (filters or {}).items():
        operator, operand = _condition(key, condition)
        if key not in metadata:
            return False
        actual = metadata[key]
        if operator == "$eq":
            if actual != operand:
                return False
        elif not isinstance(actual, list):
            return False
        elif isinstance(operand, list):
            if not all(item in actual for item in operand):
                return False
        elif operand not in actual:
            return False
    return True


def split_filters(filters: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`filters` as equalities (a store metadata filter can apply them) and the rest."""
    equal: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, condition in (filters or {}).items():
        operator, operand = _condition(key, condition)
        if operator == "$eq":
            equal[key] = operand
        else:
            rest[key] = condition
    return equal, rest


def merge_metadata_filter(requested: Mapping[str, Any], equal: Mapping[str, Any]) -> dict[str, Any] | None:
    """A caller's metadata filter narrowed by the authorization equalities; None when they
    contradict (nothing can match)."""
    merged = dict(requested)
    for key, value in equal.items():
        if key in merged and merged[key] != value:
            return None
        merged[key] = value
    return merged


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True) if isinstance(model, BaseModel) else {}


class CustomAuthGuard:
    """Applies a `langgraph_sdk.Auth`'s `@auth.on` handlers to every call (see the module doc).

    Args:
        auth: the application's `Auth` object.
    """

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    def handler_for(self, resource: str, action: str) -> Any:
        """The most specific handler for `(resource, action)`, as LangGraph picks it; None: allow."""
        for key in ((resource, action), (resource, "*"), ("*", action), ("*", "*")):
            handlers = self.auth._handlers.get(key)
            if handlers:
                return handlers[-1]
        return self.auth._global_handlers[-1] if self.auth._global_handlers else None

    async def __call__(self, endpoint: Endpoint, call: Call) -> Call:
        access = ACCESS.get((endpoint.method, endpoint.path))
        if access is None:
            if endpoint.path in PUBLIC_PATHS:
                return call
            # A route nobody classified is refused, not waved through.
            raise ApiError(403, "Forbidden")
        resource, action = access
        handler = self.handler_for(resource, action)
        user = call.request.scope.get(USER_SCOPE_KEY, ANONYMOUS)
        if action == "create_run" and handler is None:
            for each in call.body if isinstance(call.body, list) else [call.body]:
                await self._check_run_assistant(call, user, getattr(each, "assistant_id", None))
        if handler is None:
            return call
        if resource == "store":
            value = store_value(action, call)
            result = await self._authorize(handler, user, resource, action, value)
            return store_call(call, action, value, result)
        bodies = call.body if isinstance(call.body, list) else [call.body]
        filters: dict[str, Any] | None = None
        new_bodies = []
        for body in bodies:
            if resource == "crons":
                value = _cron_value(action, call.path, _dump(body))
            elif resource == "assistants":
                value = assistant_value(action, call.path, _dump(body))
            else:
                value = self._value(action, call, body)
            result = await self._authorize(handler, user, resource, action, value)
            if result is not None:
                filters = {**(filters or {}), **result}
            new_bodies.append(self._stamped(body, value) if action in _STAMPED_ACTIONS else body)
        body = new_bodies if isinstance(call.body, list) else new_bodies[0]
        call = replace(call, body=body, filters=filters)
        if action == "create_run":
            for each in new_bodies:
                await self._check_run_assistant(call, user, getattr(each, "assistant_id", None))
        if filters:
            split_filters(filters)  # refuse unknown operators now, whatever the route
            await self._check_target(call, resource, action, filters)
        return call

    async def _authorize(
        self, handler: Any, user: Any, resource: str, action: str, value: dict[str, Any]
    ) -> dict[str, Any] | None:
        ctx = AuthContext(
            permissions=list(getattr(user, "permissions", ()) or ()),
            user=user,
            resource=resource,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
        )
        try:
            result = await handler(ctx=ctx, value=value)
        except (AuthHTTPException, StarletteHTTPException) as exc:
            raise ApiError(exc.status_code, str(exc.detail)) from None
        if result is None or result is True:
            return None
        if result is False:
            raise ApiError(403, "Forbidden")
        if isinstance(result, Mapping):
            return dict(result)
        raise TypeError(
            f"@auth.on handler returned a {type(result).__name__}: expected a bool, None or a filter"
        )

    @staticmethod
    def _value(action: str, call: Call, body: Any) -> dict[str, Any]:
        """What LangGraph's server hands the handler for this action (`Auth.types.on...value`)."""
        path = call.path
        given = _dump(body)
        if action == "create":
            return {
                "thread_id": given.get("thread_id"),
                "metadata": dict(given.get("metadata") or {}),
                "if_exists": given.get("if_exists", "raise"),
            }
        if action == "create_run":
            kwargs = {
                k: v
                for k, v in given.items()
                if k
                not in ("assistant_id", "metadata", "multitask_strategy", "if_not_exists", "after_seconds")
            }
            return {
                "thread_id": path.get("thread_id"),
                "assistant_id": given.get("assistant_id"),
                "run_id": None,
                "status": "pending",
                "metadata": dict(given.get("metadata") or {}),
                "prevent_insert_if_inflight": True,
                "multitask_strategy": given.get("multitask_strategy", "enqueue"),
                "if_not_exists": given.get("if_not_exists", "reject"),
                "after_seconds": given.get("after_seconds"),
                "kwargs": kwargs,
            }
        if action == "update":
            value: dict[str, Any] = {"thread_id": path.get("thread_id") or given.get("thread_id")}
            if "metadata" in given:
                value["metadata"] = dict(given["metadata"] or {})
            query_action = getattr(call.query, "action", None)
            if query_action is not None:
                value["action"] = query_action
            return value
        if action == "search":
            value = {
                k: given[k] for k in ("metadata", "values", "status", "ids", "graph_id", "name") if k in given
            }
            page = given if given else _dump(call.query)
            value.update(limit=page.get("limit", 10), offset=page.get("offset", 0))
            if "thread_id" in path:
                value["thread_id"] = path["thread_id"]
            return value
        # read / delete
        value = {k: v for k, v in path.items() if k in ("thread_id", "run_id", "assistant_id")}
        if "thread_id" in value:
            value.setdefault("run_id", None)
        return value

    @staticmethod
    def _stamped(body: Any, value: Mapping[str, Any]) -> Any:
        """`body` with the metadata the handler wrote into `value` (the only field applied back)."""
        if not isinstance(body, BaseModel) or "metadata" not in type(body).model_fields:
            return body
        metadata = value.get("metadata")
        if not isinstance(metadata, dict) or metadata == (getattr(body, "metadata", None) or {}):
            return body
        return body.model_copy(update={"metadata": metadata})

    async def _check_run_assistant(self, call: Call, user: Any, assistant_id: str | None) -> None:
        """A run may use only an assistant the caller may read, as LangGraph checks it: the
        `assistants` read handler's filter must match (system assistants are everyone's)."""
        handler = self.handler_for("assistants", "read")
        if handler is None or assistant_id is None:
            return
        await call.manager.register_graphs(call.runtime.assistants())
        assistant = await call.manager.get_assistant(assistant_id, call.owner)
        if assistant.metadata.get("created_by") == "system":
            return
        value = {"assistant_id": assistant.assistant_id}
        result = await self._authorize(handler, user, "assistants", "read", value)
        if result and not filter_matches(assistant.metadata, result):
            raise NotFound(f"assistant {assistant_id} not found")

    async def _check_target(self, call: Call, resource: str, action: str, filters: Mapping[str, Any]) -> None:
        """Refuse a call on one resource that the filters hide, exactly as if it did not exist."""
        if resource == "assistants":
            return  # the assistants endpoints apply `call.filters` to what they read
        if resource == "crons":
            # A cron's own filters are checked on the cron by its handler; a thread cron's thread
            # must be visible like any thread the caller names.
            if "thread_id" not in call.path:
                return
            action = "read"
        thread_id = call.path.get("thread_id")
        if thread_id is None and action == "update":
            thread_id = getattr(call.body, "thread_id", None)  # POST /runs/cancel within a thread
        if action == "create":
            await _check_existing_thread(call, filters)
            return
        if thread_id is None:
            return
        try:
            thread = await call.manager.get_thread(thread_id, call.owner)
        except NotFound:
            if action != "create_run" or getattr(call.body, "if_not_exists", None) != "create":
                raise
            # The run would create the thread: create it now, with the run's (stamped) metadata,
            # so that it is born under the same filters it is checked against.
            try:
                thread = await call.manager.create_thread(
                    call.owner,
                    thread_id=thread_id,
                    metadata=dict(call.body.metadata or {}),
                    if_exists="do_nothing",
                )
            except Conflict:  # another user's thread
                raise NotFound(f"thread {thread_id} not found") from None
        if not filter_matches(thread.metadata, filters):
            raise NotFound(f"thread {thread_id} not found")


def _cron_value(action: str, path: dict[str, str] | Any, given: dict[str, Any]) -> dict[str, Any]:
    """What LangGraph's server hands `@auth.on.crons` handlers (`Auth.types.Crons...` values)."""
    if action == "create":
        return {
            "payload": given,
            "schedule": given.get("schedule"),
            "cron_id": None,
            "thread_id": path.get("thread_id"),
            "user_id": None,
            "end_time": given.get("end_time"),
            "metadata": dict(given.get("metadata") or {}),
        }
    if action == "update":
        value = {"cron_id": path.get("cron_id"), "payload": given, **given}
        if "metadata" in given:
            value["metadata"] = dict(given["metadata"] or {})
        return value
    if action == "search":
        return {
            "assistant_id": given.get("assistant_id"),
            "thread_id": given.get("thread_id"),
            "limit": given.get("limit", 10),
            "offset": given.get("offset", 0),
            "metadata": dict(given.get("metadata") or {}),
        }
    return {"cron_id": path.get("cron_id")}


async def _check_existing_thread(call: Call, filters: Mapping[str, Any]) -> None:
    """`POST /threads` with `if_exists: do_nothing` answers the existing thread: only if visible."""
    thread_id = getattr(call.body, "thread_id", None)
    if thread_id is None or getattr(call.body, "if_exists", None) != "do_nothing":
        return
    try:
        thread = await call.manager.get_thread(thread_id, call.owner)
    except NotFound:
        return
    if not filter_matches(thread.metadata, filters):
        raise Conflict(f"thread {thread_id} already exists")


def check_access_table(endpoints: Iterable[Endpoint]) -> None:
    """Raise `ValueError` when a route has no (resource, action) for `@auth.on` handlers, so a new
    route cannot silently bypass authorization."""
    missing = [
        f"{e.method} {e.path}"
        for e in endpoints
        if (e.method, e.path) not in ACCESS and e.path not in PUBLIC_PATHS
    ]
    if missing:
        raise ValueError(f"routes without an authorization rule in api.auth.ACCESS: {missing}")
