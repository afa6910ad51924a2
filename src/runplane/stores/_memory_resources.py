"""`InMemoryStore`'s assistants and thread TTLs: the reference semantics the SQL stores copy.

Kept apart from `stores/memory.py` so that the run queue stays one readable module; the mixins use
its lock, clock and dicts.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from runplane.core.errors import Conflict, NotFound
from runplane.core.graphs import Assistant
from runplane.core.models import (
    ACTIVE_RUN_STATUSES,
    AssistantFilter,
    AssistantPatch,
    AssistantSeen,
    Json,
    NewAssistant,
    Run,
    Thread,
    ThreadTtl,
)

if TYPE_CHECKING:
    from runplane.core.clock import Clock


def _copy_thread(thread: Thread) -> Thread:
    return replace(
        thread,
        metadata=copy.deepcopy(thread.metadata),
        values=copy.deepcopy(thread.values),
        interrupts=copy.deepcopy(thread.interrupts),
    )


def metadata_contains(metadata: Json, wanted: Json) -> bool:
    return all(key in metadata and metadata[key] == value for key, value in wanted.items())


def _copy(assistant: Assistant) -> Assistant:
    return replace(
        assistant,
        config=copy.deepcopy(assistant.config),
        context=copy.deepcopy(assistant.context),
        metadata=copy.deepcopy(assistant.metadata),
    )


def sort_key(assistant: Assistant, sort_by: str) -> Any:
    """LangGraph sorts names and graph ids case-insensitively; ties go by id."""
    value = getattr(assistant, sort_by)
    return (value.lower() if sort_by in ("name", "graph_id") else value, assistant.assistant_id)


def shared_assistant(assistant_id: str) -> Conflict:
    """What every store answers a caller changing a graph's shared assistant."""
    return Conflict(f"assistant {assistant_id} is a graph's shared assistant: create your own to change it")


def visible(owner: str, system: bool, caller: str) -> bool:
    return system or owner == caller


@dataclass
class _AssistantRecord:
    owner: str
    system: bool
    current: Assistant
    #: Every version, oldest first (versions are immutable).
    versions: list[Assistant] = field(default_factory=list)


class MemoryAssistants:
    """Assistants in a dict of records; see `core.store.AssistantStore`."""

    if TYPE_CHECKING:
        _lock: asyncio.Lock
        _clock: Clock
        _runs: dict[str, Run]

    @property
    def _assistants(self) -> dict[str, _AssistantRecord]:
        records: dict[str, _AssistantRecord] | None = self.__dict__.get("_assistant_records")
        if records is None:
            records = self.__dict__["_assistant_records"] = {}
        return records

    def _visible_assistant(self, assistant_id: str, owner: str) -> _AssistantRecord:
        record = self._assistants.get(assistant_id)
        if record is None or not visible(record.owner, record.system, owner):
            raise NotFound(f"assistant {assistant_id} not found")
        return record

    def _assistant_seen(self, assistant_id: str) -> AssistantSeen | None:
        """The assistant's current version, for an admission's check; None when it is gone."""
        record = self._assistants.get(assistant_id)
        return None if record is None else record.current.seen

    def _writable_assistant(self, assistant_id: str, owner: str) -> _AssistantRecord:
        record = self._visible_assistant(assistant_id, owner)
        if record.owner != owner:
            raise shared_assistant(assistant_id)
        return record

    async def put_assistant(
        self, new: NewAssistant, *, if_exists: Literal["raise", "do_nothing"] = "raise"
    ) -> Assistant:
        async with self._lock:
            existing = self._assistants.get(new.assistant_id)
            if existing is not None:
                if if_exists == "do_nothing" and visible(existing.owner, existing.system, new.owner):
                    return _copy(existing.current)
                raise Conflict(f"Assistant {new.assistant_id} already exists")
            now = self._clock.now()
            assistant = Assistant(
                assistant_id=new.assistant_id,
                graph_id=new.graph_id,
                name=new.name,
                created_at=now,
                updated_at=now,
                config=copy.deepcopy(new.config),
                context=copy.deepcopy(new.context),
                metadata=copy.deepcopy(new.metadata),
                version=1,
                description=new.description,
            )
            self._assistants[new.assistant_id] = _AssistantRecord(
                new.owner, new.system, assistant, [assistant]
            )
            return _copy(assistant)

    async def get_assistant(self, assistant_id: str, owner: str) -> Assistant:
        async with self._lock:
            return _copy(self._visible_assistant(assistant_id, owner).current)

    async def patch_assistant(self, assistant_id: str, owner: str, patch: AssistantPatch) -> Assistant:
        async with self._lock:
            record = self._writable_assistant(assistant_id, owner)
            now = self._clock.now()
            version = replace(
                patch_of(record.current, patch),
                version=max(v.version for v in record.versions) + 1,
                created_at=now,
                updated_at=now,
            )
            record.versions.append(version)
            record.current = replace(version, created_at=record.current.created_at)
            return _copy(record.current)

    async def delete_assistant(self, assistant_id: str, owner: str) -> list[Run]:
        async with self._lock:
            self._writable_assistant(assistant_id, owner)
            del self._assistants[assistant_id]
            active = [
                run
                for run in self._runs.values()
                if run.assistant_id == assistant_id and run.status in ACTIVE_RUN_STATUSES
            ]
            return sorted(active, key=lambda run: run.created_at)

    async def assistant_versions(
        self, assistant_id: str, owner: str, metadata: Json, limit: int, offset: int
    ) -> list[Assistant]:
        async with self._lock:
            record = self._visible_assistant(assistant_id, owner)
            versions = [v for v in reversed(record.versions) if metadata_contains(v.metadata, metadata)]
            return [_copy(v) for v in versions[offset : offset + limit]]

    async def set_latest_assistant_version(self, assistant_id: str, owner: str, version: int) -> Assistant:
        async with self._lock:
            record = self._writable_assistant(assistant_id, owner)
            chosen = next((v for v in record.versions if v.version == version), None)
            if chosen is None:
                raise NotFound(f"Version {version} not found for assistant {assistant_id}")
            record.current = replace(
                chosen, created_at=record.current.created_at, updated_at=self._clock.now()
            )
            return _copy(record.current)

    def _matching_assistants(self, owner: str, filter: AssistantFilter) -> list[Assistant]:
        return [
            record.current
            for record in self._assistants.values()
            if visible(record.owner, record.system, owner)
            and (filter.graph_id is None or record.current.graph_id == filter.graph_id)
            and (filter.graph_ids is None or record.current.graph_id in filter.graph_ids)
            and (not filter.name or filter.name.lower() in record.current.name.lower())
            and metadata_contains(record.current.metadata, filter.metadata)
        ]

    async def search_assistants(self, owner: str, filter: AssistantFilter) -> list[Assistant]:
        async with self._lock:
            found = self._matching_assistants(owner, filter)
            found.sort(key=lambda a: sort_key(a, filter.sort_by), reverse=filter.sort_order == "desc")
            return [_copy(a) for a in found[filter.offset : filter.offset + filter.limit]]

    async def count_assistants(self, owner: str, filter: AssistantFilter) -> int:
        async with self._lock:
            return len(self._matching_assistants(owner, filter))


def patch_of(latest: Assistant, patch: AssistantPatch) -> Assistant:
    """The next version: the patch over the latest one (metadata merged, the rest replaced)."""
    return replace(
        latest,
        graph_id=patch.graph_id if patch.graph_id is not None else latest.graph_id,
        config=copy.deepcopy(patch.config) if patch.config is not None else latest.config,
        context=copy.deepcopy(patch.context) if patch.context is not None else latest.context,
        metadata={**latest.metadata, **copy.deepcopy(patch.metadata or {})},
        name=patch.name if patch.name is not None else latest.name,
        description=patch.description if patch.description is not None else latest.description,
    )


class MemoryThreadTtl:
    """Thread TTLs in a dict; see `core.store.ThreadLifecycleStore`."""

    if TYPE_CHECKING:
        _lock: asyncio.Lock
        _clock: Clock
        _threads: dict[str, Thread]
        _thread_runs: dict[str, list[str]]
        _active_count: dict[str, int]
        _holds: dict[str, tuple[str, datetime]]

        def _owned_thread(self, thread_id: str, owner: str) -> Thread: ...
        def _remove_run(self, run_id: str) -> Run: ...

    @property
    def _ttls(self) -> dict[str, ThreadTtl]:
        ttls: dict[str, ThreadTtl] | None = self.__dict__.get("_thread_ttls")
        if ttls is None:
            ttls = self.__dict__["_thread_ttls"] = {}
        return ttls

    async def set_thread_ttl(self, thread_id: str, owner: str, ttl: ThreadTtl | None) -> None:
        async with self._lock:
            self._owned_thread(thread_id, owner)
            if ttl is None:
                self._ttls.pop(thread_id, None)
            else:
                self._ttls[thread_id] = ttl

    def _expires_at(self, thread_id: str) -> datetime | None:
        ttl = self._ttls.get(thread_id)
        thread = self._threads.get(thread_id)
        if ttl is None or thread is None:
            return None
        return thread.updated_at + timedelta(minutes=ttl.minutes)

    def _expired(self, thread_id: str) -> bool:
        expires_at = self._expires_at(thread_id)
        return (
            expires_at is not None
            and expires_at <= self._clock.now()
            and not self._active_count.get(thread_id, 0)
        )

    async def expired_threads(self, limit: int) -> list[Thread]:
        async with self._lock:
            for gone in [tid for tid in self._ttls if tid not in self._threads]:
                del self._ttls[gone]  # deleted by hand meanwhile
            expired = [tid for tid in self._ttls if self._expired(tid)]
            expired.sort(key=lambda tid: (self._expires_at(tid), tid))
            return [_copy_thread(self._threads[tid]) for tid in expired[:limit]]

    async def delete_expired_thread(self, thread_id: str) -> bool:
        async with self._lock:
            if not self._expired(thread_id):
                return False
            for run_id in list(self._thread_runs[thread_id]):
                self._remove_run(run_id)
            del self._threads[thread_id]
            self._holds.pop(thread_id, None)  # a state update's hold ends with its thread
            del self._thread_runs[thread_id]
            self._active_count.pop(thread_id, None)
            self._ttls.pop(thread_id, None)
            return True
