"""JSON for whatever a graph streams or stores: LangChain messages, pydantic models, dataclasses,
LangGraph `Interrupt`s and `Send`s, exceptions.

Payloads are encoded once, by the worker, into bytes that the bus and SSE pass through untouched.
The rules follow langgraph-api's `serde.default`, so clients see the same JSON as from LangGraph's
own server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import timedelta, timezone
from decimal import Decimal
from pathlib import PurePath
from re import Pattern
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from langgraph.types import Send

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    """What orjson cannot encode natively, mapped to plain JSON values."""
    if isinstance(obj, Send):
        return {"node": obj.node, "args": obj.arg}
    if isinstance(obj, type):
        return repr(obj)
    if callable(getattr(obj, "model_dump", None)):
        return obj.model_dump()
    if callable(getattr(obj, "dict", None)) and not isinstance(obj, Mapping):
        return obj.dict()
    if callable(getattr(obj, "_asdict", None)):
        return obj._asdict()
    if dataclasses.is_dataclass(obj):
        # orjson encodes plain dataclasses itself; this is for those with __slots__ or properties.
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, set | frozenset | deque):
        return list(obj)
    if isinstance(obj, timezone | ZoneInfo):
        return obj.tzname(None)
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, Decimal):
        return int(obj) if obj.is_finite() and obj == obj.to_integral_value() else float(obj)
    if isinstance(obj, uuid.UUID | PurePath):
        return str(obj)
    if isinstance(obj, Pattern):
        return obj.pattern
    if isinstance(obj, bytes | bytearray):
        return base64.b64encode(obj).decode()
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return repr(obj)


def dumpb(obj: Any) -> bytes:
    """`obj` as compact JSON bytes (never raises for an unknown type: it falls back to a repr).

    NUL characters become U+FFFD, since PostgreSQL JSON and many clients reject `\\u0000`.
    """
    try:
        data = orjson.dumps(obj, default=_default, option=_OPTIONS)
    except TypeError:
        try:
            # Lone surrogates in strings (from a broken decoder upstream): replace them.
            data = orjson.dumps(_scrub(obj), default=_default, option=_OPTIONS)
        except TypeError:
            # What orjson refuses outright (integers beyond 64 bits, ...): the slow, lenient way.
            data = json.dumps(_scrub(obj), default=_default, separators=(",", ":")).encode()
    if b"\\u0000" in data:
        data = data.replace(b"\\u0000", b"\\ufffd")
    return data


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def jsonable(obj: Any) -> Any:
    """`obj` as plain JSON values (dicts, lists, str, numbers, bool, None)."""
    return orjson.loads(dumpb(obj))


def _scrub(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8")
    if isinstance(obj, Mapping):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_scrub(v) for v in obj]
    return obj


# -- LangGraph state in the SDK's shapes ----------------------------------------------------------


def config_checkpoint(config: Any) -> dict[str, Any] | None:
    """A RunnableConfig's checkpoint as the SDK's `Checkpoint` (None when it names none)."""
    configurable = (config or {}).get("configurable") or {}
    if not configurable.get("thread_id") or not configurable.get("checkpoint_id"):
        return None
    checkpoint = {
        "thread_id": configurable["thread_id"],
        "checkpoint_ns": configurable.get("checkpoint_ns") or "",
        "checkpoint_id": configurable["checkpoint_id"],
    }
    if "checkpoint_map" in configurable:
        checkpoint["checkpoint_map"] = configurable["checkpoint_map"]
    return checkpoint


def interrupt_json(interrupt: Any) -> dict[str, Any]:
    """An `Interrupt` as the SDK's `Interrupt`: `{"id", "value"}` (+ `response_schema` if any)."""
    if isinstance(interrupt, Mapping):
        out = {"id": interrupt.get("id"), "value": interrupt.get("value")}
        schema = interrupt.get("response_schema")
    else:
        out = {"id": interrupt.id, "value": interrupt.value}
        schema = getattr(interrupt, "response_schema", None)
    if schema is not None:
        out["response_schema"] = schema
    return out


def _task_json(task: Any) -> dict[str, Any]:
    state = task.state
    nested = state if state is not None and hasattr(state, "tasks") else None
    return {
        "id": task.id,
        "name": task.name,
        "path": task.path,
        # LangGraph's server shows a failed task's error as its repr: "ValueError('boom!')".
        "error": repr(task.error) if isinstance(task.error, BaseException) else task.error,
        "interrupts": [interrupt_json(i) for i in task.interrupts],
        "checkpoint": state["configurable"] if state is not None and nested is None else None,
        "state": _snapshot(nested) if nested is not None else None,
        "result": getattr(task, "result", None),
    }


def _snapshot(snapshot: Any) -> dict[str, Any]:
    config, parent = snapshot.config, snapshot.parent_config
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": [_task_json(t) for t in snapshot.tasks],
        "metadata": snapshot.metadata,
        "created_at": snapshot.created_at,
        "checkpoint": config_checkpoint(config),
        "parent_checkpoint": config_checkpoint(parent),
        "interrupts": [interrupt_json(i) for i in getattr(snapshot, "interrupts", ())],
        # Deprecated in the SDK, still sent by LangGraph's server.
        "checkpoint_id": ((config or {}).get("configurable") or {}).get("checkpoint_id"),
        "parent_checkpoint_id": ((parent or {}).get("configurable") or {}).get("checkpoint_id"),
    }


def thread_state(snapshot: Any) -> dict[str, Any]:
    """A LangGraph `StateSnapshot` as the SDK's `ThreadState`, in plain JSON values."""
    return dict(jsonable(_snapshot(snapshot)))


def thread_interrupts(snapshot: Any) -> dict[str, Any]:
    """The pending interrupts of a snapshot by task id, as the SDK's `Thread.interrupts`."""
    return dict(
        jsonable({t.id: [interrupt_json(i) for i in t.interrupts] for t in snapshot.tasks if t.interrupts})
    )
