"""`RunManager`'s thread stream use-case (`GET /threads/{id}/stream`): a mixin, like `core.resources`."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from runplane.core.errors import InvalidInput, NotFound
from runplane.core.events import WAKEUP_CHANNEL, EventBus, HintWaiter, StreamEvent
from runplane.core.models import SINGLE_USER, Run, RunFilter, Thread

if TYPE_CHECKING:
    from runplane.core.manager import ManagerSettings
    from runplane.core.store import Store


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# -- thread streams -----------------------------------------------------------------------------------

#: Separates the run id from the run's own event id in a thread stream's event ids.
THREAD_EVENT_SEPARATOR = "/"
_RUN_PAGE = 100


def thread_event_id(run_id: str, event_id: str) -> str:
    return f"{run_id}{THREAD_EVENT_SEPARATOR}{event_id}"


def parse_thread_event_id(last_event_id: str) -> tuple[str, str | None]:
    """`(run_id, event_id or None)` of a thread stream's event id.

    Raises:
        InvalidInput: not an id this stream gave out.
    """
    run_id, separator, event_id = last_event_id.partition(THREAD_EVENT_SEPARATOR)
    if not _is_uuid(run_id):
        raise InvalidInput("Invalid last-event-id: not an event id of this thread stream")
    return run_id, (event_id or None) if separator else None


class ThreadStreams:
    """`GET /threads/{id}/stream`: the thread's runs one after another; mixed into `RunManager`."""

    if TYPE_CHECKING:
        store: Store
        bus: EventBus
        settings: ManagerSettings

        async def stream_run(
            self,
            run_id: str,
            owner: str = SINGLE_USER,
            *,
            last_event_id: str | None = None,
            thread_id: str | None = None,
        ) -> AsyncIterator[StreamEvent]: ...

        async def get_thread(self, thread_id: str, owner: str = SINGLE_USER) -> Thread: ...

    async def _runs_newest_first(self, thread_id: str, owner: str, stop: set[str]) -> list[Run]:
        """The thread's runs newest first, down to the first one in `stop` (or all of them)."""
        runs: list[Run] = []
        offset = 0
        while True:
            page = await self.store.list_runs(thread_id, owner, RunFilter(limit=_RUN_PAGE, offset=offset))
            for run in page:
                if run.run_id in stop:
                    return runs
                runs.append(run)
            if len(page) < _RUN_PAGE:
                return runs
            offset += _RUN_PAGE

    async def stream_thread(
        self, thread_id: str, owner: str = SINGLE_USER, *, last_event_id: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        """The thread's runs' events, one run after the other, for as long as the caller listens.

        Without `last_event_id`: the runs active now, then every later one. With it (an id this
        stream gave out): the rest of that run, then every later one. After each run a `metadata`
        event `{"status": "run_done", "run_id": ...}`, as LangGraph sends. Every event id is
        `<run_id>/<event id in the run>`. Between runs this holds no database connection: it sleeps
        on the bus's new-run hint (re-reading the store every `wait_fallback_seconds` in case a
        hint is lost).

        Raises:
            NotFound: unknown thread (checked before the first event).
            InvalidInput: `last_event_id` is not one of this stream's ids.
        """
        await self.get_thread(thread_id, owner)
        resume: tuple[str, str | None] | None = None
        if last_event_id:
            resume = parse_thread_event_id(last_event_id)
        existing = await self._runs_newest_first(thread_id, owner, set())
        seen: set[str] = set()
        if resume is not None:
            ids = [run.run_id for run in existing]
            if resume[0] in ids:
                # Older runs were streamed before; so was this one if its end was.
                seen = set(ids[ids.index(resume[0]) + (0 if resume[1] == "done" else 1) :])
        else:
            seen = {run.run_id for run in existing if run.is_terminal}
        return self._follow_thread(thread_id, owner, seen, resume)

    async def _follow_thread(
        self, thread_id: str, owner: str, seen: set[str], resume: tuple[str, str | None] | None
    ) -> AsyncIterator[StreamEvent]:
        async with (
            self.bus.listen(WAKEUP_CHANNEL) as hints,
            contextlib.aclosing(HintWaiter(hints, self.settings.wait_fallback_seconds)) as hint,
        ):
            while True:
                try:
                    pending = await self._runs_newest_first(thread_id, owner, seen)
                except NotFound:
                    return  # the thread was deleted
                if not pending:
                    await hint.wait()
                    continue
                run = pending[-1]  # the oldest not yet streamed
                seen.add(run.run_id)
                after = resume[1] if resume is not None and resume[0] == run.run_id else None
                try:
                    events = await self.stream_run(run.run_id, owner, last_event_id=after)
                except NotFound:
                    continue  # deleted meanwhile (a rollback)
                async for event in events:
                    yield StreamEvent(event.event, event.data, thread_event_id(run.run_id, event.id))
                done_data = b'{"status":"run_done","run_id":"' + run.run_id.encode() + b'"}'
                yield StreamEvent("metadata", done_data, thread_event_id(run.run_id, "done"))
