"""`StreamModes`: the stream modes a run was asked for, parsed once where the request enters (the HTTP
API, the embedding facade) and read as a value everywhere after (the worker, the SSE filter).

The names are the SDK's (`langgraph_sdk.schema.StreamMode`). Two of them are not LangGraph's own:
`messages-tuple` is LangGraph's `messages` relayed as is, and `events` is `astream_events`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

#: What a run streams when it asks for nothing, as LangGraph's server defaults it.
DEFAULT_STREAM_MODES: tuple[str, ...] = ("values",)

#: The modes `graph.astream(stream_mode=...)` knows.
LANGGRAPH_MODES = frozenset({"values", "updates", "checkpoints", "tasks", "debug", "messages", "custom"})

#: Which event names a mode produces (before any `|namespace` suffix), where they differ from its name.
MODE_EVENTS: Mapping[str, tuple[str, ...]] = {
    "messages": ("messages/partial", "messages/complete", "messages/metadata"),
    "messages-tuple": ("messages",),
}


@dataclass(frozen=True, slots=True)
class StreamModes:
    """Stream mode names, deduplicated, in the order they were asked for."""

    names: tuple[str, ...]

    @classmethod
    def parse(
        cls,
        requested: str | Iterable[str] | None,
        *,
        default: Iterable[str] = DEFAULT_STREAM_MODES,
        required: Iterable[str] = (),
    ) -> StreamModes:
        """One mode, several, or none (then `default`), with `required` ones added.

        Empty names are dropped: `""` is what httpx sends for the SDK's `stream_mode=None`.
        """
        given = [requested] if isinstance(requested, str) else list(requested or ())
        modes = [mode for mode in given if mode] or list(default)
        return cls(tuple(dict.fromkeys([*modes, *required])))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, mode: object) -> bool:
        return mode in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    def to_json(self) -> list[str]:
        """As stored in a run's kwargs (`stream_mode`)."""
        return list(self.names)

    def langgraph(self) -> list[str]:
        """The LangGraph modes that serve these SDK modes (unknown ones are dropped)."""
        modes = {"messages" if mode == "messages-tuple" else mode for mode in self.names}
        return sorted(modes & LANGGRAPH_MODES)

    def accepts(self, event: str) -> bool:
        """Whether a stream filtered to these modes passes `event` (`error` and `end` always pass;
        `metadata` only when asked for, as on the reference server's filtered join)."""
        name = event.partition("|")[0]
        if name in ("error", "end"):
            return True
        return any(name in MODE_EVENTS.get(mode, (mode,)) for mode in self.names)
