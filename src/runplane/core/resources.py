"""`RunManager`'s use-cases for assistants and thread lifecycle (TTL, prune, thread streams).

A mixin of `RunManager`, kept in its own module so the run use-cases stay one readable file. It
talks to the store's `AssistantStore` and `ThreadLifecycleStore` sides, which every store has.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from runplane.core.errors import InvalidInput, NotFound, StoreUnavailable
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.items import Item, ItemStore, Namespace, check_namespace, strip_root
from runplane.core.models import (
    SINGLE_USER,
    AssistantFilter,
    AssistantPatch,
    Json,
    NewAssistant,
    Run,
    Thread,
    ThreadTtl,
)
from runplane.core.store import AssistantStore, ThreadLifecycleStore

#: How many (assistant, owner) copies `assistant_for_run` keeps before it starts over.
_ASSISTANT_COPIES = 1024

if TYPE_CHECKING:
    from runplane.core.store import Store

#: Metadata LangGraph stamps on a graph's own assistant.
SYSTEM_METADATA: Json = {"created_by": "system"}


def _check_page(limit: int, offset: int) -> None:
    if not 0 <= limit <= 1000:
        raise InvalidInput("limit must be between 0 and 1000")
    if offset < 0:
        raise InvalidInput("offset must be >= 0")


def sync_config_context(config: Json, context: Json | None) -> tuple[Json, Json | None]:
    """LangGraph keeps an assistant's `config.configurable` and `context` equal: whichever is given
    sets the other.

    Raises:
        InvalidInput: both are given (LangGraph answers 400 too).
    """
    config = copy.deepcopy(config)
    configurable = config.get("configurable")
    if configurable and context:
        raise InvalidInput(
            "Cannot specify both configurable and context. Prefer setting context alone. Context was "
            "introduced in LangGraph 0.6.0 and is the long term planned replacement for configurable."
        )
    if configurable:
        return config, copy.deepcopy(configurable)
    if context:
        config["configurable"] = copy.deepcopy(context)
    return config, context


def merge_assistant_config(
    assistant: Assistant, config: Json | None, context: Json | None
) -> tuple[Json, Json]:
    """A run's config and context over its assistant's, in LangGraph's precedence (run wins, key
    by key; `configurable` and `metadata` merged one level deeper).

    Returns:
        (config, context) to execute with.
    """
    own = copy.deepcopy(config or {})
    base = copy.deepcopy(assistant.config)
    merged: Json = {**base, **own}
    for key in ("configurable", "metadata"):
        inner = {**(base.get(key) or {}), **(own.get(key) or {})}
        if inner:
            merged[key] = inner
    return merged, {**copy.deepcopy(assistant.context), **copy.deepcopy(context or {})}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class ResourceUseCases:
    """Assistants and thread lifecycle; mixed into `RunManager`."""

    if TYPE_CHECKING:
        store: Store

        async def cancel_run(
            self,
            run_id: str,
            owner: str = SINGLE_USER,
            *,
            action: Literal["interrupt", "rollback"] = "interrupt",
            wait: bool = False,
            thread_id: str | None = None,
        ) -> Run | None: ...

        async def _end(self, run_id: str) -> None: ...

    # -- plumbing ---------------------------------------------------------------------------------

    @property
    def _assistant_store(self) -> AssistantStore:
        if not isinstance(self.store, AssistantStore):
            raise StoreUnavailable(f"{type(self.store).__name__} keeps no assistants")
        return self.store

    @property
    def _ttl_store(self) -> ThreadLifecycleStore:
        if not isinstance(self.store, ThreadLifecycleStore):
            raise StoreUnavailable(f"{type(self.store).__name__} keeps no thread TTLs")
        return self.store

    @property
    def _graphs(self) -> dict[str, Assistant]:
        """The served graphs' own assistants by graph id (as `register_graphs` saw them)."""
        graphs: dict[str, Assistant] | None = self.__dict__.get("_served_graphs")
        if graphs is None:
            graphs = self.__dict__["_served_graphs"] = {}
        return graphs

    # -- assistants -------------------------------------------------------------------------------

    async def register_graphs(self, assistants: Iterable[Assistant]) -> None:
        """Make sure each served graph has its system assistant in the store, with LangGraph's
        deterministic id (`uuid5`), so ids match across servers and restarts. Idempotent: a graph
        is written once per manager, and an existing assistant (perhaps patched) is kept."""
        for assistant in assistants:
            if assistant.graph_id in self._graphs:
                continue
            await self._assistant_store.put_assistant(
                NewAssistant(
                    assistant_id=default_assistant_id(assistant.graph_id),
                    graph_id=assistant.graph_id,
                    owner=SINGLE_USER,
                    name=assistant.name or assistant.graph_id,
                    description=assistant.description,
                    config=dict(assistant.config),
                    context=dict(assistant.context),
                    metadata={**SYSTEM_METADATA, **assistant.metadata},
                    system=True,
                ),
                if_exists="do_nothing",
            )
            self._graphs[assistant.graph_id] = assistant

    def _assistant_id(self, assistant_id: str) -> str:
        """An id as given, or a served graph's name as its system assistant's id."""
        if assistant_id in self._graphs and not _is_uuid(assistant_id):
            return default_assistant_id(assistant_id)
        return assistant_id

    def _check_graph(self, graph_id: str) -> None:
        if self._graphs and graph_id not in self._graphs:
            raise NotFound(f"Graph '{graph_id}' not found. Expected one of: {sorted(self._graphs)}")

    def _served(self, assistant: Assistant) -> Assistant:
        # Assistants of graphs this server does not serve are hidden, as LangGraph hides them.
        if self._graphs and assistant.graph_id not in self._graphs:
            raise NotFound(f"assistant {assistant.assistant_id} not found")
        return assistant

    async def create_assistant(
        self,
        graph_id: str,
        owner: str = SINGLE_USER,
        *,
        assistant_id: str | None = None,
        config: Json | None = None,
        context: Json | None = None,
        metadata: Json | None = None,
        name: str | None = None,
        description: str | None = None,
        if_exists: Literal["raise", "do_nothing"] = "raise",
    ) -> Assistant:
        """Create an assistant (version 1) of a served graph.

        Raises:
            NotFound: the graph is not served.
            InvalidInput: both `config.configurable` and `context`.
            Conflict: the id exists (with `if_exists="raise"`, or it is not visible to `owner`).
        """
        self._check_graph(graph_id)
        config, context = sync_config_context(config or {}, context)
        new = NewAssistant(
            assistant_id=assistant_id or str(uuid.uuid4()),
            graph_id=graph_id,
            owner=owner,
            name=name or "Untitled",
            description=description,
            config=config,
            context=dict(context or {}),
            metadata=dict(metadata or {}),
        )
        return await self._assistant_store.put_assistant(new, if_exists=if_exists)

    async def get_assistant(self, assistant_id: str, owner: str = SINGLE_USER) -> Assistant:
        """An assistant by id, or a served graph's system assistant by the graph's name."""
        found = await self._assistant_store.get_assistant(self._assistant_id(assistant_id), owner)
        return self._served(found)

    async def assistant_for_run(self, assistant_id: str, owner: str = SINGLE_USER) -> Assistant:
        """`get_assistant`, from this process's copy when it has one, for building a run.

        Another process may have patched or deleted the assistant since: the run is to be created
        with `assistant_seen=assistant.seen`, which the admission checks, and on `AssistantChanged`
        the caller calls `forget_assistant` and builds the run again from a fresh read. So a run
        never starts from a version that was not current at its admission, and a run's creation
        makes no read of its assistant while nothing changes it (issues 14 and 18).
        """
        copies = self._assistant_copies
        key = (self._assistant_id(assistant_id), owner)
        found = copies.get(key)
        if found is None:
            found = await self.get_assistant(assistant_id, owner)
            if len(copies) >= _ASSISTANT_COPIES:
                copies.clear()  # many owners' private assistants: start over rather than grow
            copies[key] = found
        return found

    def forget_assistant(self, assistant_id: str) -> None:
        """Drop this process's copies of an assistant (every owner's), after it changed."""
        gone = self._assistant_id(assistant_id)
        for key in [key for key in self._assistant_copies if key[0] == gone]:
            del self._assistant_copies[key]

    @property
    def _assistant_copies(self) -> dict[tuple[str, str], Assistant]:
        """`assistant_for_run`'s copies by (assistant id, owner)."""
        copies: dict[tuple[str, str], Assistant] | None = self.__dict__.get("_assistants_for_runs")
        if copies is None:
            copies = self.__dict__["_assistants_for_runs"] = {}
        return copies

    async def update_assistant(
        self, assistant_id: str, patch: AssistantPatch, owner: str = SINGLE_USER
    ) -> Assistant:
        """Write a new version and make it current (versions are immutable).

        Raises:
            NotFound: unknown or invisible assistant, or a graph that is not served.
            Conflict: a shared system assistant changed by a named user.
        """
        if patch.graph_id is not None:
            self._check_graph(patch.graph_id)
        config, context = sync_config_context(patch.config or {}, patch.context)
        if patch.config is not None or patch.context is not None:
            patch = AssistantPatch(
                graph_id=patch.graph_id,
                config=config,
                context=context if context is not None else patch.context,
                metadata=patch.metadata,
                name=patch.name,
                description=patch.description,
            )
        try:
            return await self._assistant_store.patch_assistant(self._assistant_id(assistant_id), owner, patch)
        finally:
            self.forget_assistant(assistant_id)

    async def delete_assistant(self, assistant_id: str, owner: str = SINGLE_USER) -> list[Run]:
        """Delete an assistant and its versions, as LangGraph does: its pending and running runs
        are cancelled (`interrupt`); its finished runs keep their record. Returns the cancelled runs."""
        try:
            active = await self._assistant_store.delete_assistant(self._assistant_id(assistant_id), owner)
        finally:
            self.forget_assistant(assistant_id)
        for run in active:
            try:
                await self.cancel_run(run.run_id, run.owner, action="interrupt", thread_id=run.thread_id)
            except NotFound:
                continue  # it ended and was deleted meanwhile
        return active

    async def assistant_versions(
        self,
        assistant_id: str,
        owner: str = SINGLE_USER,
        *,
        metadata: Json | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Assistant]:
        _check_page(limit, offset)
        return await self._assistant_store.assistant_versions(
            self._assistant_id(assistant_id), owner, dict(metadata or {}), limit, offset
        )

    async def set_latest_assistant_version(
        self, assistant_id: str, version: int, owner: str = SINGLE_USER
    ) -> Assistant:
        try:
            return await self._assistant_store.set_latest_assistant_version(
                self._assistant_id(assistant_id), owner, version
            )
        finally:
            self.forget_assistant(assistant_id)

    def _scoped(self, filter: AssistantFilter) -> AssistantFilter:
        if filter.graph_id is not None:
            self._check_graph(filter.graph_id)
        if not self._graphs:
            return filter
        return AssistantFilter(
            graph_id=filter.graph_id,
            name=filter.name,
            metadata=filter.metadata,
            graph_ids=tuple(self._graphs),
            limit=filter.limit,
            offset=filter.offset,
            sort_by=filter.sort_by,
            sort_order=filter.sort_order,
        )

    async def search_assistants(
        self, owner: str = SINGLE_USER, filter: AssistantFilter | None = None
    ) -> list[Assistant]:
        filter = filter or AssistantFilter()
        _check_page(filter.limit, filter.offset)
        return await self._assistant_store.search_assistants(owner, self._scoped(filter))

    async def count_assistants(self, owner: str = SINGLE_USER, filter: AssistantFilter | None = None) -> int:
        return await self._assistant_store.count_assistants(owner, self._scoped(filter or AssistantFilter()))

    # -- thread TTL and prune -----------------------------------------------------------------------

    async def set_thread_ttl(self, thread_id: str, ttl: ThreadTtl | None, owner: str = SINGLE_USER) -> None:
        if ttl is not None and ttl.minutes < 0:
            raise InvalidInput("ttl must be >= 0 minutes")
        await self._ttl_store.set_thread_ttl(thread_id, owner, ttl)

    async def sweep_expired_threads(self, limit: int = 100) -> list[Thread]:
        """Delete threads whose TTL ran out (with their runs); returns those deleted, whose
        checkpoints the caller deletes. A thread that got a run meanwhile is kept."""
        deleted = []
        for thread in await self._ttl_store.expired_threads(limit):
            if await self._ttl_store.delete_expired_thread(thread.thread_id):
                deleted.append(thread)
        return deleted

    # -- long-term store (LangGraph `BaseStore`) ----------------------------------------------------
    #
    # `root` is the caller's namespace root (`core.items.owner_root`, or () when the store is shared):
    # every namespace a caller names is under it, and it is stripped from what the caller gets back.

    def attach_items(self, items: ItemStore) -> None:
        """Serve `items` (the graphs' own long-term store) at `/store/*`."""
        self.__dict__["_item_store_attached"] = items

    @property
    def _items(self) -> ItemStore:
        items: ItemStore | None = self.__dict__.get("_item_store_attached")
        if items is None:
            raise StoreUnavailable("this server has no long-term store")
        return items

    async def put_item(
        self,
        namespace: Namespace,
        key: str,
        value: Json,
        *,
        root: Namespace = (),
        index: Literal[False] | list[str] | None = None,
        ttl: float | None = None,
    ) -> None:
        if ttl is not None and ttl < 0:
            raise InvalidInput("ttl must be >= 0 minutes")
        check_namespace(namespace)
        await self._items.put_item((*root, *namespace), key, value, index=index, ttl=ttl)

    async def get_item(
        self, namespace: Namespace, key: str, *, root: Namespace = (), refresh_ttl: bool | None = None
    ) -> Item | None:
        check_namespace(namespace)
        item = await self._items.get_item((*root, *namespace), key, refresh_ttl=refresh_ttl)
        return _unrooted(item, root) if item is not None else None

    async def delete_item(self, namespace: Namespace, key: str, *, root: Namespace = ()) -> None:
        check_namespace(namespace)
        await self._items.delete_item((*root, *namespace), key)

    async def search_items(
        self,
        prefix: Namespace,
        *,
        root: Namespace = (),
        filter: Json | None = None,
        query: str | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[Item]:
        _check_page(limit, offset)
        check_namespace(prefix, allow_empty=True)
        found = await self._items.search_items(
            (*root, *prefix), filter=filter, query=query, limit=limit, offset=offset, refresh_ttl=refresh_ttl
        )
        return [_unrooted(item, root) for item in found]

    async def list_namespaces(
        self,
        *,
        root: Namespace = (),
        prefix: Namespace | None = None,
        suffix: Namespace | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Namespace]:
        _check_page(limit, offset)
        for part in (prefix, suffix):
            if part is not None:
                check_namespace(part, allow_empty=True)
        full_prefix = (*root, *(prefix or ())) or None
        found = await self._items.list_namespaces(
            prefix=full_prefix,
            suffix=suffix or None,
            max_depth=max_depth + len(root) if max_depth is not None else None,
            limit=limit,
            offset=offset,
        )
        return [strip_root(namespace, root) for namespace in found]

    async def sweep_items(self) -> int:
        """Delete long-term store items whose TTL ran out (none when no store is attached)."""
        items: ItemStore | None = self.__dict__.get("_item_store_attached")
        return await items.sweep_expired() if items is not None else 0


def _unrooted(item: Item, root: Namespace) -> Item:
    return Item(
        namespace=strip_root(item.namespace, root),
        key=item.key,
        value=item.value,
        created_at=item.created_at,
        updated_at=item.updated_at,
        score=item.score,
    )
