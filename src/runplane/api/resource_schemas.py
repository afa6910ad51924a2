"""Wire models of assistants writes, the long-term store and thread lifecycle routes (as
`langgraph_sdk` sends them). Kept beside `api/schemas.py`, with its conventions: strict request
bodies, unknown fields ignored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from runplane.api.schemas import Body, Config, Int, JsonObject, Limit, Metadata, Offset, Query, UuidStr
from runplane.api.thread_schemas import Minutes

# -- assistants -------------------------------------------------------------------------------------


class AssistantCreate(Body):
    graph_id: str = Field(min_length=1)
    assistant_id: UuidStr | None = None
    config: Config | None = None
    context: JsonObject | None = None
    metadata: Metadata | None = None
    if_exists: Literal["raise", "do_nothing"] | None = "raise"
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)


class AssistantPatch(Body):
    graph_id: str | None = Field(None, min_length=1)
    config: Config | None = None
    context: JsonObject | None = None
    metadata: Metadata | None = None
    name: str | None = Field(None, max_length=1000)
    description: str | None = Field(None, max_length=10_000)


class AssistantVersions(Body):
    metadata: JsonObject | None = None
    limit: Limit = 10
    offset: Offset = 0


class AssistantLatest(Body):
    version: Int = Field(ge=1)


class AssistantDeleteQuery(Query):
    delete_threads: bool = Field(False, description="Also delete the threads this assistant ran on.")


# -- long-term store ----------------------------------------------------------------------------------

Namespace = Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=64)]


class StorePut(Body):
    namespace: Namespace
    key: str = Field(min_length=1, max_length=1024)
    value: JsonObject
    index: Literal[False] | list[str] | None = None
    ttl: Minutes | None = None


class StoreDelete(Body):
    namespace: Namespace
    key: str = Field(min_length=1, max_length=1024)


class StoreGetQuery(Query):
    #: Labels joined with "." (as the SDK sends them).
    namespace: str | None = Field(None, max_length=64 * 257)
    key: str = Field(min_length=1, max_length=1024)
    refresh_ttl: bool | None = None


class StoreSearch(Body):
    namespace_prefix: Namespace | None = None
    filter: JsonObject | None = None
    limit: Limit = 10
    offset: Offset = 0
    query: str | None = Field(None, max_length=10_000)
    refresh_ttl: bool | None = None


class StoreNamespaces(Body):
    prefix: Namespace | None = None
    suffix: Namespace | None = None
    max_depth: Int | None = Field(None, ge=1, le=64)
    limit: Limit = 100
    offset: Offset = 0


# -- thread lifecycle -----------------------------------------------------------------------------------


class ThreadPrune(Body):
    thread_ids: list[UuidStr] = Field(max_length=1000)
    strategy: Literal["delete", "keep_latest"] = "delete"


class ThreadStreamQuery(Query):
    #: The SDK sends `stream_mode`; LangGraph's server reads `stream_modes`: both are accepted.
    stream_mode: list[Literal["run_modes", "lifecycle", "state_update"]] | None = None
    stream_modes: list[Literal["run_modes", "lifecycle", "state_update"]] | None = None


class ThreadGetQuery(Query):
    include: list[str] | None = None
