"""`RunKwargs`: what a run executes, as one frozen value read by attribute.

The HTTP API validates a request (`api.schemas`) and builds it (`api.runs.build_kwargs`); the
embedding facade builds it from its arguments; the worker reads it. It is stored as JSON
(`to_json`, the keys LangGraph's server shows in a run's `kwargs`), and every stored row reads back
(`from_json`), including rows written before this type existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeAlias, get_args

from runplane.core.errors import InvalidInput
from runplane.core.stream_modes import StreamModes

_Json: TypeAlias = dict[str, Any]

Durability: TypeAlias = Literal["sync", "async", "exit"]
"""When LangGraph writes checkpoints: each step before the next (`sync`), in the background
(`async`, LangGraph's default) or only at the end (`exit`)."""

NodeNames: TypeAlias = list[str] | Literal["*"]
"""Nodes to stop before or after (`interrupt_before`, `interrupt_after`); `*` is every node."""

DURABILITIES: tuple[Durability, ...] = get_args(Durability)


@dataclass(frozen=True, slots=True)
class RunKwargs:
    """What a run executes: the request's words, validated where it entered. Every field is
    optional; the worker applies LangGraph's defaults."""

    #: The graph to run (None: the assistant's).
    graph_id: str | None = None
    #: The graph's input; None resumes from the thread's checkpoint (or runs a `command`).
    input: Any = None
    #: `{"resume", "update", "goto"}`, run instead of `input`.
    command: _Json | None = None
    config: _Json = field(default_factory=dict)
    context: _Json = field(default_factory=dict)
    #: The SDK stream modes requested; the worker publishes exactly these.
    stream_mode: StreamModes = field(default_factory=lambda: StreamModes.parse(None))
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    interrupt_before: NodeNames | None = None
    interrupt_after: NodeNames | None = None
    #: The checkpoint to start from (`checkpoint_id`, `checkpoint_ns`, `checkpoint_map`).
    checkpoint: _Json | None = None
    checkpoint_id: str | None = None
    durability: Durability | None = None
    #: Where the run's final record is POSTed once it ends (the webhook outbox).
    webhook: str | None = None
    #: LangSmith feedback keys: kept and shown, as LangGraph's server shows them, but no feedback
    #: URLs are made (there is no LangSmith here; see the README's compatibility notes).
    feedback_keys: list[str] | None = None
    #: The version of the assistant whose config and context were merged in (at creation).
    assistant_version: int | None = None
    #: A stateless run's own thread (`on_completion="delete"`): the worker deletes the thread, its
    #: runs and checkpoints once the run has ended, as LangGraph's server does.
    temporary: bool = False

    def to_json(self) -> _Json:
        """The stored (and shown) form: only what was given, under the API's key names."""
        data: _Json = {}
        if self.graph_id is not None:
            data["graph_id"] = self.graph_id
        data["stream_mode"] = self.stream_mode.to_json()
        for name in ("input", "command", "checkpoint", "checkpoint_id", "durability", "webhook"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        for name in ("interrupt_before", "interrupt_after", "feedback_keys", "assistant_version"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.config:
            data["config"] = self.config
        if self.context:
            data["context"] = self.context
        for name in ("stream_subgraphs", "stream_resumable", "temporary"):
            if getattr(self, name):
                data[name] = True
        return data

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RunKwargs:
        """Validate a mapping of the API's keys (a caller of the manager that builds none itself).

        Raises:
            InvalidInput: an unknown key, or a value of the wrong type.
        """
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidInput(f"unknown run kwargs: {', '.join(unknown)}")
        return _read(data, strict=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RunKwargs:
        """Read a stored row: unknown keys (a newer or older version's) are left out, a value of the
        wrong type reads as its default. Never raises."""
        return _read(data or {}, strict=False)


_FIELDS = frozenset(f.name for f in fields(RunKwargs))


def _read(data: Mapping[str, Any], *, strict: bool) -> RunKwargs:
    values: dict[str, Any] = {}

    def take(name: str, ok: bool, value: Any) -> None:
        if ok:
            values[name] = value
        elif strict:
            raise InvalidInput(f"run kwargs: invalid {name}")

    for name, value in data.items():
        if name not in _FIELDS or value is None:
            continue
        if name == "input":
            values[name] = value
        elif name in ("config", "context", "command", "checkpoint"):
            take(name, isinstance(value, dict), value)
        elif name in ("graph_id", "checkpoint_id", "webhook"):
            take(name, isinstance(value, str), value)
        elif name in ("stream_subgraphs", "stream_resumable", "temporary"):
            take(name, isinstance(value, bool), value)
        elif name == "stream_mode":
            if isinstance(value, StreamModes):
                values[name] = value
            else:
                ok = isinstance(value, str) or _strings(value)
                take(name, ok, StreamModes.parse(value) if ok else None)
        elif name in ("interrupt_before", "interrupt_after"):
            nodes = value if value == "*" else list(value) if _strings(value) else None
            take(name, nodes is not None, nodes)
        elif name == "feedback_keys":
            take(name, _strings(value), list(value) if _strings(value) else None)
        elif name == "durability":
            take(name, value in DURABILITIES, value)
        elif name == "assistant_version":
            take(name, isinstance(value, int) and not isinstance(value, bool), value)
    return RunKwargs(**values)


def _strings(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(item, str) for item in value)
