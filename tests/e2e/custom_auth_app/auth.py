"""LangGraph custom auth, written as LangGraph's "make conversations private" tutorial does it.

Nothing here knows about runplane: the same file works on LangGraph's own server.
"""

from __future__ import annotations

from typing import Any

from langgraph_sdk import Auth

#: Bearer token -> user (a real app would verify a JWT or ask its identity provider).
USERS: dict[str, Auth.types.MinimalUserDict] = {
    "token-alice": {"identity": "alice", "permissions": ["threads:delete"]},
    "token-bob": {"identity": "bob", "permissions": []},
}

auth = Auth()


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    scheme, _, token = (authorization or "").partition(" ")
    user = USERS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid or missing token")
    return user


@auth.on
async def owner_only(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Auth.types.FilterType:
    """Stamp everything a user creates with their identity, and show them only what they own."""
    filters = {"owner": ctx.user.identity}
    metadata = value.setdefault("metadata", {})
    metadata.update(filters)
    return filters


@auth.on.threads.delete
async def deleters_only(ctx: Auth.types.AuthContext, value: Auth.types.on.threads.delete.value) -> Any:  # type: ignore[valid-type]  # LangGraph's documented spelling
    if "threads:delete" not in ctx.permissions:
        raise Auth.exceptions.HTTPException(status_code=403, detail="You may not delete threads")
    return {"owner": ctx.user.identity}


@auth.on.assistants
async def assistants_are_shared(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    """The graphs' assistants belong to nobody: everyone may read and search them."""
    return None
