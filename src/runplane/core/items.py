"""The long-term store's items (LangGraph `BaseStore`, served at `/store/*`), as the core sees them.

`ItemStore` is the protocol the API reaches LangGraph's store through (the adapter lives in
`runtime/`); the namespace rules are pure functions here.

Isolation with API keys: each user's items live under their own namespace root. A user's
`("memories",)` is stored as `(root, "memories")` where `root` is the user's identity with `%` and
`.` percent-encoded (a namespace label may not contain a period), and the root is stripped from
everything the user gets back. A graph run by that user reads the same items under
`(owner_root(identity), ...)`. Single-user mode has no root. Custom auth follows LangGraph: its
`@auth.on.store` handlers rewrite namespaces themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, TypeAlias

from runplane.core.errors import InvalidInput
from runplane.core.models import SINGLE_USER, Json

Namespace: TypeAlias = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Item:
    """One stored value (LangGraph `Item` / `SearchItem`)."""

    namespace: Namespace
    key: str
    value: Json
    created_at: datetime
    updated_at: datetime
    #: Relevance of a semantic search hit; None otherwise.
    score: float | None = None
    extra: Json = field(default_factory=dict)


class ItemStore(Protocol):
    """LangGraph's `BaseStore`, the one the graphs get, reduced to what the HTTP API needs."""

    async def put_item(
        self,
        namespace: Namespace,
        key: str,
        value: Json,
        *,
        index: Literal[False] | list[str] | None = None,
        ttl: float | None = None,
    ) -> None:
        """Create or replace an item; `ttl` in minutes (None: never expires)."""
        ...

    async def get_item(
        self, namespace: Namespace, key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None: ...

    async def delete_item(self, namespace: Namespace, key: str) -> None: ...

    async def search_items(
        self,
        prefix: Namespace,
        *,
        filter: Json | None = None,
        query: str | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[Item]: ...

    async def list_namespaces(
        self,
        *,
        prefix: Namespace | None = None,
        suffix: Namespace | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Namespace]: ...

    async def sweep_expired(self) -> int:
        """Delete the items whose TTL ran out; returns how many."""
        ...


def check_namespace(namespace: Namespace, *, allow_empty: bool = False) -> Namespace:
    """A namespace as LangGraph accepts it: labels non-empty, without periods or NUL bytes.

    Raises:
        InvalidInput: a label breaks the rule (or the namespace is empty and may not be).
    """
    if not namespace and not allow_empty:
        raise InvalidInput("Namespace must have at least one label")
    for label in namespace:
        if not isinstance(label, str) or not label or "." in label or "\x00" in label:
            raise InvalidInput(f"Namespace label {label!r} must be a non-empty string without periods")
    if namespace and namespace[0] == "langgraph":
        raise InvalidInput('The root label of a namespace cannot be "langgraph"')
    return namespace


def owner_root(owner: str) -> Namespace:
    """The namespace prefix a user's items live under (empty in single-user mode)."""
    if owner == SINGLE_USER:
        return ()
    return (owner.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00"),)


def strip_root(namespace: Namespace, root: Namespace) -> Namespace:
    return namespace[len(root) :] if root and namespace[: len(root)] == root else namespace
