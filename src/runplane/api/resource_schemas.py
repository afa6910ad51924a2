"""Wire models of assistants writes, the long-term store and thread lifecycle routes (as
`langgraph_sdk` sends them). Kept beside `api/schemas.py`, with its conventions: strict request
bodies, unknown fields ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, WithJsonSchema

from runplane.api.schemas import Body, Config, JsonObject, Limit, Metadata, Offset, Query, UuidStr
from runplane.api.thread_schemas import Minutes


def _whole(value: Any) -> Any:
    # JSON Schema counts 10.0 as an integer; strict pydantic would refuse it.
    return int(value) if isinstance(value, float) and value.is_integer() else value


Version = Annotated[
    int,
    BeforeValidator(_whole),
    Field(ge=1, le=2**31 - 1),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 2**31 - 1}),
]
Depth = Annotated[
    int,
    BeforeValidator(_whole),
    Field(ge=1, le=64),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 64}),
]


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
    version: Version


class AssistantDeleteQuery(Query):
    delete_threads: bool = Field(False, description="Also delete the threads this assistant ran on.")


# -- long-term store ----------------------------------------------------------------------------------

#: A namespace label: no period (it joins labels in GET's `namespace`), no NUL, not empty.
_LABEL = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^.\\u0000]+$"}
#: LangGraph's stores refuse the root label "langgraph".
_NOT_RESERVED = {"not": {"minItems": 1, "prefixItems": [{"const": "langgraph"}]}}
Namespace = Annotated[
    list[Annotated[str, Field(max_length=256)]],
    Field(min_length=1, max_length=64),
    WithJsonSchema({"type": "array", "items": _LABEL, "minItems": 1, "maxItems": 64, **_NOT_RESERVED}),
]
Prefix = Annotated[
    list[Annotated[str, Field(max_length=256)]],
    Field(max_length=64),
    WithJsonSchema({"type": "array", "items": _LABEL, "maxItems": 64, **_NOT_RESERVED}),
]


def _only_false(value: bool) -> bool:
    if value:
        raise ValueError("index is false (do not index) or a list of fields")
    return value


#: `false`: store the item without indexing it for semantic search.
NoIndex = Annotated[StrictBool, AfterValidator(_only_false), WithJsonSchema({"const": False})]


class StorePut(Body):
    namespace: Namespace
    key: str = Field(min_length=1, max_length=1024)
    value: JsonObject
    index: NoIndex | list[str] | None = None
    ttl: Minutes | None = None


class StoreDelete(Body):
    namespace: Namespace
    key: str = Field(min_length=1, max_length=1024)


class StoreGetQuery(Query):
    namespace: Annotated[
        str,
        Field(max_length=64 * 257),
        WithJsonSchema(
            {
                "type": "string",
                "maxLength": 64 * 257,
                "pattern": "^(?!langgraph(\\.|$))[^.\\u0000]+(\\.[^.\\u0000]+)*$",
                "description": "The labels joined with '.'.",
            }
        ),
    ]
    key: str = Field(min_length=1, max_length=1024)
    refresh_ttl: bool | None = None


class StoreSearch(Body):
    namespace_prefix: Prefix | None = None
    filter: JsonObject | None = None
    limit: Limit = 10
    offset: Offset = 0
    query: str | None = Field(None, max_length=10_000)
    refresh_ttl: bool | None = None


class StoreNamespaces(Body):
    prefix: Prefix | None = None
    suffix: Prefix | None = None
    max_depth: Depth | None = None
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
