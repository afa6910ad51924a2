"""Domain records -> the JSON the SDK reads (`langgraph_sdk.schema` shapes), encoded once with orjson."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from starlette.responses import Response

from runplane.core.graphs import Assistant
from runplane.core.models import Json, Run, Thread, ThreadOutput
from runplane.core.run_kwargs import RunKwargs

#: Run kwargs the reference server always shows, with its defaults; ours are merged over them.
_KWARGS_DEFAULTS: Mapping[str, Any] = {
    "input": None,
    "command": None,
    "config": {},
    "context": {},
    "stream_mode": ["values"],
    "interrupt_before": None,
    "interrupt_after": None,
    "webhook": None,
    "feedback_keys": None,
    "temporary": False,
    "durability": "async",
}

_ERROR_PREFIX = re.compile(r"^([A-Za-z_][\w.]*): (.*)$", re.DOTALL)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(content: Any) -> bytes:
    """JSON bytes; orjson, or the standard library for what orjson refuses (integers beyond 64 bits,
    which a client may legitimately send and get back)."""
    try:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return json.dumps(content, default=_default, separators=(",", ":")).encode()


def json_response(content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        dumps(content),
        status_code,
        headers=dict(headers) if headers else None,
        media_type="application/json",
    )


def select(item: dict[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """`item` restricted to `fields` (all of it when None)."""
    if not fields:
        return item
    return {name: item[name] for name in fields if name in item}


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "thread_id": thread.thread_id,
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "state_updated_at": thread.updated_at,
        "metadata": thread.metadata,
        "status": thread.status,
        "config": thread.config,
        "values": thread.values,
        "error": error_text_json(thread.error) if thread.error is not None else None,
        "interrupts": thread.interrupts,
    }


def run_kwargs_view(kwargs: RunKwargs, run: Run | None = None) -> dict[str, Any]:
    """The stored `RunKwargs` with the reference server's keys and aliases filled in.

    With the run, `config` also shows what the server adds when it executes it, as the reference
    server's run records do: the ids in `configurable`, the run's metadata in `metadata`.
    """
    view = {**_KWARGS_DEFAULTS, **kwargs.to_json()}
    view["subgraphs"] = kwargs.stream_subgraphs
    view["resumable"] = kwargs.stream_resumable
    view["checkpoint_during"] = view.get("durability") != "exit"
    if run is not None:
        config: Json = dict(kwargs.config)
        config["configurable"] = {
            **(config.get("configurable") or {}),
            "run_id": run.run_id,
            "thread_id": run.thread_id,
            "graph_id": kwargs.graph_id,
            "assistant_id": run.assistant_id,
            "user_id": run.owner,
        }
        config["metadata"] = {**run.metadata, **(config.get("metadata") or {})}
        view["config"] = config
    return view


def run_json(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "status": run.status,
        "metadata": run.metadata,
        "multitask_strategy": run.multitask_strategy,
        "kwargs": run_kwargs_view(run.kwargs, run),
    }


def assistant_json(assistant: Assistant) -> dict[str, Any]:
    return {
        "assistant_id": assistant.assistant_id,
        "graph_id": assistant.graph_id,
        "config": assistant.config,
        "context": assistant.context,
        "metadata": assistant.metadata,
        "name": assistant.name,
        "created_at": assistant.created_at,
        "updated_at": assistant.updated_at,
        "version": assistant.version,
        "description": assistant.description,
    }


def error_json(run: Run) -> dict[str, str]:
    """`{"error": type, "message": text}` from a run's stored error (`"Type: message"` by convention)."""
    text = run.error or ""
    if run.status == "timeout" and not _ERROR_PREFIX.match(text) and not text.startswith("{"):
        return {"error": "TimeoutError", "message": text or "run timed out"}
    return error_text_json(text)


def error_text_json(text: str) -> dict[str, str]:
    """`{"error": type, "message": text}` from a stored error text (`"Type: message"` or JSON)."""
    if text.startswith("{"):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and "error" in parsed:
            return {"error": str(parsed["error"]), "message": str(parsed.get("message", ""))}
    match = _ERROR_PREFIX.match(text)
    if match:
        return {"error": match.group(1), "message": match.group(2)}
    return {"error": "Error", "message": text}


def flat_interrupts(interrupts: Json) -> list[Any]:
    """A thread's interrupts (by task id) as the flat `__interrupt__` list the SDK expects."""
    flat: list[Any] = []
    for pending in interrupts.values():
        items = pending if isinstance(pending, list) else [pending]
        # The reference server's `__interrupt__` entries always carry `response_schema`.
        flat.extend({"response_schema": None, **i} if isinstance(i, dict) else i for i in items)
    return flat


def final_output(run: Run | None, thread: Thread | ThreadOutput | None) -> Any:
    """The body of `wait` and `join`: the thread's values after the run, `__interrupt__` when the
    graph stopped at `interrupt()`, or `__error__` when the run failed."""
    if run is not None and run.status in ("error", "timeout"):
        return {"__error__": error_json(run)}
    if thread is None:
        return {}
    values: Any = thread.values
    if not isinstance(values, dict):
        return {} if values is None else values
    output = dict(values)
    if thread.interrupts:
        output["__interrupt__"] = flat_interrupts(thread.interrupts)
    return output
