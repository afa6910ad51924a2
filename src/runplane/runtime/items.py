"""`LangGraphItems`: the graphs' own LangGraph `BaseStore` as a `core.items.ItemStore`, for `/store/*`.

What is written over HTTP is what a graph reads through `store` / `get_store()`, and the other way
round: there is one store. TTLs are LangGraph's: `AsyncSqliteStore` and `AsyncPostgresStore` keep an
`expires_at` per item and `sweep_ttl()` deletes expired ones. `InMemoryStore` has no TTL support,
so for it the adapter keeps the expiry times itself, hides expired items from every read made
through it and deletes them when swept.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, Literal

from langgraph.store.base import BaseStore, InvalidNamespaceError, SearchItem
from langgraph.store.base import Item as LangGraphItem
from langgraph.store.memory import InMemoryStore

from runplane.core.clock import Clock, SystemClock
from runplane.core.errors import InvalidInput
from runplane.core.items import Item, Namespace
from runplane.core.models import Json

_Key = tuple[Namespace, str]


def _item(found: LangGraphItem) -> Item:
    return Item(
        namespace=tuple(found.namespace),
        key=found.key,
        value=dict(found.value),
        created_at=found.created_at,
        updated_at=found.updated_at,
        score=found.score if isinstance(found, SearchItem) else None,
    )


class LangGraphItems:
    """Implements `core.items.ItemStore` over a LangGraph `BaseStore`.

    Args:
        store: the store the graphs get.
        clock: time source of the TTLs this adapter keeps itself (stores without TTL support).
    """

    def __init__(self, store: BaseStore, *, clock: Clock | None = None) -> None:
        self.store = store
        self._clock = clock or SystemClock()
        self._native_ttl = bool(getattr(store, "supports_ttl", False)) and hasattr(store, "sweep_ttl")
        #: For stores without TTL support: (namespace, key) -> (expires_at, ttl minutes).
        self._expiry: dict[_Key, tuple[datetime, float]] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<LangGraphItems {type(self.store).__name__} native_ttl={self._native_ttl}>"

    async def put_item(
        self,
        namespace: Namespace,
        key: str,
        value: Json,
        *,
        index: Literal[False] | list[str] | None = None,
        ttl: float | None = None,
    ) -> None:
        try:
            if self._native_ttl:
                await self.store.aput(namespace, key, value, index=index, ttl=ttl)
                return
            await self.store.aput(namespace, key, value, index=index)
        except InvalidNamespaceError as exc:
            raise InvalidInput(str(exc)) from exc
        async with self._lock:
            if ttl is None:
                self._expiry.pop((namespace, key), None)
            else:
                self._expiry[(namespace, key)] = (self._clock.now() + timedelta(minutes=ttl), ttl)

    async def get_item(
        self, namespace: Namespace, key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        if self._native_ttl:
            found = await self.store.aget(namespace, key, refresh_ttl=refresh_ttl)
            return _item(found) if found is not None else None
        await self.sweep_expired()
        found = await self.store.aget(namespace, key)
        self._forget_if_empty(namespace)
        if found is not None and refresh_ttl is not False:
            await self._refresh([(namespace, key)])
        return _item(found) if found is not None else None

    async def delete_item(self, namespace: Namespace, key: str) -> None:
        await self.store.adelete(namespace, key)
        self._forget_if_empty(namespace)
        async with self._lock:
            self._expiry.pop((namespace, key), None)

    async def search_items(
        self,
        prefix: Namespace,
        *,
        filter: Json | None = None,
        query: str | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[Item]:
        kwargs: dict[str, Any] = {"filter": filter, "query": query, "limit": limit, "offset": offset}
        if self._native_ttl:
            return [
                _item(found) for found in await self.store.asearch(prefix, refresh_ttl=refresh_ttl, **kwargs)
            ]
        await self.sweep_expired()
        found = await self.store.asearch(prefix, **kwargs)
        if refresh_ttl is not False:
            await self._refresh([(tuple(item.namespace), item.key) for item in found])
        return [_item(item) for item in found]

    async def list_namespaces(
        self,
        *,
        prefix: Namespace | None = None,
        suffix: Namespace | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Namespace]:
        if not self._native_ttl:
            await self.sweep_expired()
        found = await self.store.alist_namespaces(
            prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
        )
        return [tuple(namespace) for namespace in found]

    async def sweep_expired(self) -> int:
        if self._native_ttl:
            return int(await self.store.sweep_ttl())  # type: ignore[attr-defined]
        now = self._clock.now()
        async with self._lock:
            expired = [entry for entry, (expires_at, _) in self._expiry.items() if expires_at <= now]
            for entry in expired:
                del self._expiry[entry]
        for namespace, key in expired:
            await self.store.adelete(namespace, key)
        return len(expired)

    def _forget_if_empty(self, namespace: Namespace) -> None:
        """`InMemoryStore` (langgraph 1.x) keeps its items in a `defaultdict`, so a read or delete
        of a missing namespace creates it: it is then listed by `list_namespaces` for ever, and
        every such request grows the process. Drop what a read left empty (covered by the
        isolation matrix's store test, which fails without this)."""
        data = getattr(self.store, "_data", None) if isinstance(self.store, InMemoryStore) else None
        if isinstance(data, dict) and namespace in data and not data[namespace]:
            del data[namespace]

    async def _refresh(self, keys: list[_Key]) -> None:
        """LangGraph's `refresh_on_read`: a read restarts the item's TTL."""
        now = self._clock.now()
        async with self._lock:
            for key in keys:
                if key in self._expiry:
                    ttl = self._expiry[key][1]
                    self._expiry[key] = (now + timedelta(minutes=ttl), ttl)
