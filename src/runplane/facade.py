"""The use-cases an embedding application calls from its own routes, each with the caller's identity.

`Runplane.runs` and `Runplane.threads` are these. They speak in the `RunManager`'s terms (the store
is the truth, the bus carries hints) and add what the HTTP API adds to a bare `create_run`: the
assistant is resolved, its config is applied under the run's, and the thread remembers its graph, so
a run created here and one created through the mounted API are the same run.

Every call takes `user`: the identity the host application authenticated. Threads and runs are
scoped by it; another user's run is `NotFound`, exactly as through the API. `""` is the single user
of an application without users.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from runplane.core.errors import InvalidInput
from runplane.core.events import StreamEvent
from runplane.core.graphs import Assistant, GraphRuntime
from runplane.core.manager import RunManager
from runplane.core.models import (
    SINGLE_USER,
    CancelAction,
    IfNotExists,
    Json,
    MultitaskStrategy,
    Run,
    RunFilter,
    RunStatus,
    Thread,
    ThreadFilter,
)
from runplane.core.resources import merge_assistant_config
from runplane.core.run_kwargs import RunKwargs
from runplane.core.stream_modes import StreamModes


def run_kwargs(
    assistant: Assistant,
    *,
    input: Any,
    command: Json | None,
    config: Json | None,
    context: Json | None,
    stream_mode: Sequence[str],
) -> RunKwargs:
    """The `RunKwargs` the worker executes, as the HTTP API builds them: only what was given."""
    return RunKwargs(
        graph_id=assistant.graph_id,
        stream_mode=StreamModes.parse(stream_mode),
        command=dict(command) if command is not None else None,
        input=input if command is None else None,
        config=dict(config or {}),
        context=dict(context or {}),
        assistant_version=assistant.version,
    )


class Runs:
    """Create, read, list, cancel, join, stream and delete runs for a user.

    Args:
        manager: the run manager (store, bus, clock).
        runtime: the graphs, to resolve assistants.
    """

    def __init__(self, manager: RunManager, runtime: GraphRuntime) -> None:
        self._manager = manager
        self._runtime = runtime

    async def create(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        user: str = SINGLE_USER,
        input: Any = None,
        command: Json | None = None,
        config: Json | None = None,
        context: Json | None = None,
        metadata: Json | None = None,
        stream_mode: Sequence[str] = ("values",),
        multitask_strategy: MultitaskStrategy = "enqueue",
        if_not_exists: IfNotExists = "reject",
        after_seconds: float | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Admit a run of `assistant_id` (an assistant id or a graph id) on `thread_id`.

        The admission is atomic in the store, whatever the number of processes: with `reject`, of
        two concurrent creates on one thread exactly one is admitted; `interrupt` and `rollback`
        cancel the thread's active run durably; `enqueue` queues behind it.

        Raises:
            NotFound: unknown assistant, or unknown thread and `if_not_exists` is "reject".
            ThreadBusy: `reject` on a thread with an active run.
            Conflict: `idempotency_key` reused with another request.
            InvalidInput: both `configurable` and `context` given, unknown strategy, negative delay.
        """
        assistant = await self._assistant(assistant_id, user)
        if config and config.get("configurable") and context:
            raise InvalidInput("Cannot specify both configurable and context: use context only")
        configurable = assistant.config.get("configurable") or {}
        # The assistant's config and context under the run's, and the version they come from, as
        # the HTTP API admits runs.
        merged_config, merged_context = merge_assistant_config(assistant, config, context)
        kwargs = run_kwargs(
            assistant,
            input=input,
            command=command,
            config=merged_config or None,
            context=merged_context or None,
            stream_mode=stream_mode,
        )
        run = await self._manager.create_run(
            thread_id,
            assistant.assistant_id,
            user,
            kwargs=kwargs,
            metadata={
                **assistant.metadata,
                "graph_id": assistant.graph_id,
                "assistant_id": assistant.assistant_id,
                **(metadata or {}),
            },
            multitask_strategy=multitask_strategy,
            if_not_exists=if_not_exists,
            after_seconds=after_seconds,
            idempotency_key=idempotency_key,
            thread_config={**assistant.config, **(config or {}), "configurable": dict(configurable)},
            # Which graph ran last, for the state reads: written in the admitting transaction (a
            # second write after the wake-up would lock the thread under the worker's claim).
            thread_metadata_update={"graph_id": assistant.graph_id, "assistant_id": assistant.assistant_id},
        )
        return run

    async def _assistant(self, assistant_id: str, user: str) -> Assistant:
        """The assistant a create names (an assistant id or a graph id), resolved as the API resolves
        it: a stored assistant of the user's, or a served graph's system assistant."""
        await self._manager.register_graphs(self._runtime.assistants())
        return await self._manager.get_assistant(assistant_id, user)

    async def create_or_reject(self, thread_id: str, assistant_id: str, **options: Any) -> Run:
        """`create` with `multitask_strategy="reject"` (deer-flow's `RunManager.create_or_reject`).

        Raises:
            ThreadBusy: the thread has an active run.
        """
        return await self.create(thread_id, assistant_id, multitask_strategy="reject", **options)

    async def get(self, run_id: str, *, user: str = SINGLE_USER, thread_id: str | None = None) -> Run:
        """The run as the store has it now.

        Raises:
            NotFound: no such run for this user (or not on `thread_id`).
        """
        return await self._manager.get_run(run_id, user, thread_id)

    async def list(
        self,
        thread_id: str,
        *,
        user: str = SINGLE_USER,
        status: RunStatus | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> builtins.list[Run]:
        """The thread's runs, newest first (deer-flow's `list_by_thread`).

        Raises:
            NotFound: no such thread for this user.
            InvalidInput: `limit` or `offset` out of range.
        """
        return await self._manager.list_runs(
            thread_id, user, RunFilter(status=status, limit=limit, offset=offset)
        )

    async def cancel(
        self,
        run_id: str,
        *,
        user: str = SINGLE_USER,
        action: CancelAction = "interrupt",
        wait: bool = False,
        thread_id: str | None = None,
    ) -> Run | None:
        """Cancel a run; the request is durable before anyone is told, so it survives the death of
        this process and reaches a worker in another one. With `wait`, returns the run once stopped
        (None when `rollback` deleted it). Idempotent on a finished run.

        Raises:
            NotFound: no such run for this user.
        """
        return await self._manager.cancel_run(run_id, user, action=action, wait=wait, thread_id=thread_id)

    async def join(
        self,
        run_id: str,
        *,
        user: str = SINGLE_USER,
        timeout: float | None = None,
        thread_id: str | None = None,
    ) -> Run | None:
        """Wait until the run is terminal and return it (None when it was deleted meanwhile).

        Raises:
            NotFound: no such run for this user.
            TimeoutError: `timeout` elapsed first.
        """
        return await self._manager.wait_for_run(run_id, user, timeout=timeout, thread_id=thread_id)

    async def stream(
        self,
        run_id: str,
        *,
        user: str = SINGLE_USER,
        last_event_id: str | None = None,
        thread_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """The run's events (`event`, JSON `data`, `id`) from the start, or after `last_event_id`, live
        until the run ends. Ownership is checked before the first event; a run that ended long ago
        yields nothing (read the thread's state instead). `runplane.sse_response` serves it as SSE.

        Raises:
            NotFound: no such run for this user.
            InvalidInput: a malformed `last_event_id`.
        """
        events = await self._manager.stream_run(
            run_id, user, last_event_id=last_event_id, thread_id=thread_id
        )
        try:
            async for event in events:
                yield event
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    async def delete(
        self,
        run_id: str,
        *,
        user: str = SINGLE_USER,
        thread_id: str | None = None,
        stop_running: bool = False,
    ) -> None:
        """Delete a pending or finished run; with `stop_running`, a running one too, once stopped.

        Raises:
            NotFound: no such run for this user.
            Conflict: the run is running and `stop_running` is False.
        """
        await self._manager.delete_run(run_id, user, thread_id, stop_running=stop_running)


class Threads:
    """Create, read, search and delete threads for a user, and read their checkpointed state.

    Args:
        manager: the run manager.
        runtime: the graphs and their checkpointer.
    """

    def __init__(self, manager: RunManager, runtime: GraphRuntime) -> None:
        self._manager = manager
        self._runtime = runtime

    async def create(
        self,
        *,
        user: str = SINGLE_USER,
        thread_id: str | None = None,
        metadata: Json | None = None,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> Thread:
        """A new thread owned by `user` (`do_nothing`: the existing one, when `thread_id` exists).

        Raises:
            Conflict: `thread_id` exists and `if_exists` is "raise".
        """
        return await self._manager.create_thread(
            user, thread_id=thread_id, metadata=metadata, if_exists=if_exists
        )

    async def get(self, thread_id: str, *, user: str = SINGLE_USER) -> Thread:
        """The thread, with its status and the values of its last run.

        Raises:
            NotFound: no such thread for this user.
        """
        return await self._manager.get_thread(thread_id, user)

    async def search(
        self,
        *,
        user: str = SINGLE_USER,
        metadata: Json | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> builtins.list[Thread]:
        """The user's threads whose metadata contains `metadata`, newest first."""
        return await self._manager.search_threads(
            user, ThreadFilter(metadata=dict(metadata or {}), limit=limit, offset=offset)
        )

    async def delete(self, thread_id: str, *, user: str = SINGLE_USER) -> None:
        """Delete the thread, its runs and its checkpoints; a run still executing on it stops.

        Raises:
            NotFound: no such thread for this user.
        """
        await self._manager.delete_thread(thread_id, user)
        await self._runtime.delete_thread(thread_id)

    async def state(self, thread_id: str, *, user: str = SINGLE_USER) -> Json:
        """The thread's current checkpointed state (`values`, `next`, `tasks`, `checkpoint`, ...), as
        `GET /threads/{id}/state` answers it; an empty state before its first run.

        Raises:
            NotFound: no such thread for this user.
        """
        thread = await self._manager.get_thread(thread_id, user)
        graph_id = thread.metadata.get("graph_id")
        if not isinstance(graph_id, str):
            return {"values": {}, "next": [], "tasks": [], "metadata": {}, "checkpoint": None}
        return await self._runtime.get_state(graph_id, thread_id)

    async def update_state(
        self,
        thread_id: str,
        values: Any,
        *,
        user: str = SINGLE_USER,
        as_node: str | None = None,
        checkpoint_id: str | None = None,
    ) -> Json:
        """Write a new checkpoint on the thread (`POST /threads/{id}/state`), atomic against runs:
        refused while a run is pending or running, and no run is admitted until it is recorded.

        Returns:
            `{"checkpoint": {...}}` of the new checkpoint.

        Raises:
            NotFound: no such thread for this user.
            InvalidInput: no graph ran on the thread yet (nothing says which graph's state it is).
            ThreadBusy: a run is active on the thread, or another update holds it.
        """
        thread = await self._manager.get_thread(thread_id, user)
        graph_id = thread.metadata.get("graph_id")
        if not isinstance(graph_id, str):
            raise InvalidInput(f"thread {thread_id} has no graph yet: run one on it first")
        return await self._manager.update_thread_state(
            self._runtime, graph_id, thread_id, user, values, as_node=as_node, checkpoint_id=checkpoint_id
        )

    async def history(
        self, thread_id: str, *, user: str = SINGLE_USER, limit: int = 10
    ) -> builtins.list[Json]:
        """The thread's past states, newest first (empty before its first run).

        Raises:
            NotFound: no such thread for this user.
        """
        thread = await self._manager.get_thread(thread_id, user)
        graph_id = thread.metadata.get("graph_id")
        if not isinstance(graph_id, str):
            return []
        return await self._runtime.get_history(graph_id, thread_id, limit=limit)
