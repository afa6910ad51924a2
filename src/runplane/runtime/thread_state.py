"""Thread-state writes beyond a single update: `threads.create(supersteps=...)`.

A superstep is a list of updates applied together, as if the nodes named by `as_node` had run in
the same step (LangGraph's `abulk_update_state`). LangGraph's server uses them to copy a thread
between deployments; each update carries `values` or a `command`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langgraph.pregel import Pregel
from langgraph.types import Command, Send, StateUpdate

from runplane.core.models import Json
from runplane.runtime.serde import config_checkpoint


def state_command(command: Json) -> Command[Any]:
    """The API's `command` (`resume`, `update`, `goto`) as a LangGraph `Command`, mapped as
    LangGraph's server maps it (`goto` may name nodes or `{"node", "input"}` sends)."""
    goto = command.get("goto")
    if goto is not None and not isinstance(goto, list):
        goto = [goto]
    update = command.get("update")
    if isinstance(update, list) and all(
        isinstance(t, list | tuple) and len(t) == 2 and isinstance(t[0], str) for t in update
    ):
        update = [tuple(t) for t in update]
    return Command(
        update=update,
        goto=[g if isinstance(g, str) else Send(g["node"], g["input"]) for g in goto] if goto else (),
        resume=command.get("resume"),
    )


def state_updates(supersteps: Sequence[Json]) -> list[list[StateUpdate]]:
    """The API's supersteps (`[{"updates": [{"values", "command", "as_node"}]}]`) for LangGraph."""
    return [
        [
            StateUpdate(
                # LangGraph applies a Command here too (its server sends them); the hint says dict.
                state_command(update["command"]) if update.get("command") else update.get("values"),  # type: ignore[arg-type]
                update.get("as_node"),
            )
            for update in superstep.get("updates") or ()
        ]
        for superstep in supersteps
    ]


async def apply_supersteps(graph: Pregel, thread_id: str, supersteps: Sequence[Json]) -> Json:
    """Write `supersteps` onto the thread, one checkpoint each; returns `{"checkpoint": ...}` of the
    last one, as `update_state` does."""
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    written = await graph.abulk_update_state(config, state_updates(supersteps))  # type: ignore[arg-type]
    return {"checkpoint": config_checkpoint(written)}
