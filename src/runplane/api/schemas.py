"""Wire models: what the API accepts (validated strictly) and what it answers (for the OpenAPI document).

Names and shapes follow `langgraph_sdk.schema` and LangGraph's reference server, so the official SDK
works unchanged. Request bodies are validated in pydantic's strict mode: a JSON `"5"` is not an
integer and `1` is not a boolean, so the documented schema is exactly what the server accepts.
Unknown body fields are ignored, as the reference server does.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeAlias, get_args

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from runplane.api.thread_schemas import Extract, TtlField

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: One day: the longest `after_seconds` accepted. Longer delays are a scheduler's job (crons), and
#: a run parked for years would hold its thread and every wait on it.
MAX_DELAY_SECONDS = 86_400.0
#: Largest metadata object accepted on a thread or run, as JSON.
MAX_METADATA_BYTES = 64 * 1024
#: Largest page offset; larger ones cannot match anything and overflow SQL integers.
MAX_OFFSET = 2**31 - 1


def canonical_uuid(value: str) -> str:
    """`value` in canonical (lower-case, hyphenated) form; `ValueError` when it is not a UUID."""
    if not _UUID_RE.match(value):
        raise ValueError("must be a UUID")
    return value.lower()


UuidStr: TypeAlias = Annotated[
    str, AfterValidator(canonical_uuid), WithJsonSchema({"type": "string", "format": "uuid"})
]

StreamModeName: TypeAlias = Literal[
    "values", "messages", "messages-tuple", "tasks", "checkpoints", "updates", "events", "debug", "custom"
]
STREAM_MODES: tuple[str, ...] = get_args(StreamModeName)
RunStatusName: TypeAlias = Literal["pending", "running", "error", "success", "timeout", "interrupted"]
ThreadStatusName: TypeAlias = Literal["idle", "busy", "interrupted", "error"]
MultitaskStrategyName: TypeAlias = Literal["reject", "rollback", "interrupt", "enqueue"]
CancelActionName: TypeAlias = Literal["interrupt", "rollback"]
DisconnectMode: TypeAlias = Literal["cancel", "continue"]
SortOrder: TypeAlias = Literal["asc", "desc"]
ThreadSortBy: TypeAlias = Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"]
ThreadField: TypeAlias = Literal[
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "status",
    "values",
    "interrupts",
]
RunField: TypeAlias = Literal[
    "run_id",
    "thread_id",
    "assistant_id",
    "created_at",
    "updated_at",
    "status",
    "metadata",
    "kwargs",
    "multitask_strategy",
]
AssistantSortBy: TypeAlias = Literal["assistant_id", "created_at", "updated_at", "name", "graph_id"]
AssistantField: TypeAlias = Literal[
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
]


def _whole(value: Any) -> Any:
    # JSON Schema counts 10.0 as an integer; strict pydantic would refuse it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer, also written as a float with no fraction (`10.0`), as JSON Schema allows.
# The validator hides bounds from pydantic's schema generator: the JSON schema is stated outright.
Int = Annotated[int, BeforeValidator(_whole), WithJsonSchema({"type": "integer"})]
Limit = Annotated[
    int,
    BeforeValidator(_whole),
    Field(ge=1, le=1000),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 1000}),
]
Offset = Annotated[
    int,
    BeforeValidator(_whole),
    Field(ge=0, le=MAX_OFFSET),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
]
JsonObject: TypeAlias = dict[str, Any]


def _bounded_metadata(value: JsonObject) -> JsonObject:
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # integers beyond 64 bits: measured the slow way
        size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are accepted")
    return value


#: Metadata stored on a thread or run: a JSON object of bounded size.
Metadata = Annotated[
    JsonObject,
    AfterValidator(_bounded_metadata),
    WithJsonSchema({"type": "object", "description": f"At most {MAX_METADATA_BYTES // 1024} KiB as JSON."}),
]


class Body(BaseModel):
    """A request body: strict types, unknown fields ignored, no NaN or infinities."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Open(BaseModel):
    """A nested object whose unknown keys are kept (LangGraph configs and checkpoints)."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)


class Query(BaseModel):
    """Query parameters: values arrive as strings, so they are parsed leniently (`"10"`, `"true"`)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


# -- shared pieces -----------------------------------------------------------------------------------


class Config(Open):
    """LangGraph `RunnableConfig` subset; other keys are passed through to the graph."""

    tags: list[str] | None = None
    recursion_limit: Int | None = None
    configurable: JsonObject | None = None


class CheckpointConfig(Open):
    """Which checkpoint of a thread (all keys optional)."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    checkpoint_map: JsonObject | None = None


class Send(Body):
    """Send a message to a node."""

    node: str
    input: Any


class Command(Body):
    """Resume, update or redirect the graph (LangGraph `Command`)."""

    update: JsonObject | list[Any] | None = None
    resume: Any = None
    goto: Send | list[Send] | str | list[str] | None = None


# -- runs -------------------------------------------------------------------------------------------


class RunCreateBase(Body):
    assistant_id: str = Field(min_length=1, description="Assistant id (UUID) or graph name.")
    input: Any = Field(None, description="The graph input.")
    command: Command | None = Field(None, description="Resume or steer an interrupted graph.")
    metadata: Metadata | None = None
    config: Config | None = None
    context: JsonObject | None = None
    webhook: str | None = Field(
        None, min_length=1, max_length=65536, description="POSTed the run's final record when it ends."
    )
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    stream_mode: StreamModeName | list[StreamModeName] | None = Field(
        None, description="Stream mode(s); default `values`."
    )
    stream_subgraphs: bool | None = False
    stream_resumable: bool | None = False
    feedback_keys: list[str] | None = None
    after_seconds: float | None = Field(None, ge=0, le=MAX_DELAY_SECONDS)
    checkpoint_during: bool | None = Field(
        None, description="Deprecated: use `durability`.", json_schema_extra={"deprecated": True}
    )
    durability: Literal["sync", "async", "exit"] | None = None
    on_disconnect: DisconnectMode | None = Field(
        None, description="For streaming and waiting requests: cancel the run when the client leaves."
    )

    @model_validator(mode="after")
    def _input_or_command(self) -> RunCreateBase:
        if self.input is not None and self.command is not None:
            raise ValueError("input and command are mutually exclusive")
        return self


class RunCreateStateful(RunCreateBase):
    """Create a run on a thread."""

    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    multitask_strategy: MultitaskStrategyName | None = "enqueue"
    if_not_exists: Literal["create", "reject"] | None = "reject"


class RunCreateStateless(RunCreateBase):
    """Create a run on a new temporary thread."""

    on_completion: Literal["delete", "keep"] | None = Field(
        "delete", description="Delete the temporary thread when the run ends, or keep it."
    )


def _cancel_schema(schema: dict[str, Any]) -> None:
    for name, prop in schema["properties"].items():
        options = [o for o in prop.pop("anyOf", ()) if o.get("type") != "null"]
        prop.pop("default", None)
        if options:
            schema["properties"][name] = {**options[0], **prop}  # absent, never null
    schema["oneOf"] = [{"required": ["status"]}, {"required": ["thread_id", "run_ids"]}]


class RunsCancel(Body):
    """Cancel runs: either `status`, or `thread_id` with `run_ids`."""

    model_config = ConfigDict(json_schema_extra=_cancel_schema)

    status: Literal["pending", "running", "all"] | None = None
    thread_id: UuidStr | None = None
    run_ids: Annotated[list[UuidStr], Field(min_length=1)] | None = None

    @field_validator("status", "thread_id", "run_ids", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Absent, not null: `{"status": null}` selects nothing, so it must not pass the `oneOf`.
        if value is None:
            raise ValueError("may be omitted but not null")
        return value

    @model_validator(mode="after")
    def _one_selector(self) -> RunsCancel:
        # Exactly the documented `oneOf`: `status` (optionally within `thread_id`), or both ids.
        given = self.model_fields_set
        by_status = "status" in given
        by_ids = {"thread_id", "run_ids"} <= given
        if by_status == by_ids:
            raise ValueError("give either status, or thread_id with run_ids")
        return self


class RunListQuery(Query):
    limit: Limit = 10
    offset: Offset = 0
    status: RunStatusName | None = None
    select: list[RunField] | None = Field(None, description="Fields to return (all when absent).")


class CancelQuery(Query):
    wait: bool = Field(False, description="Answer once the run has stopped.")
    action: CancelActionName = "interrupt"


class BulkCancelQuery(Query):
    action: CancelActionName = "interrupt"


class JoinQuery(Query):
    cancel_on_disconnect: bool = False


class JoinStreamQuery(Query):
    cancel_on_disconnect: bool = False
    # "" is what httpx sends for the SDK's `stream_mode=None`: it means every mode.
    stream_mode: list[StreamModeName | Literal[""]] | None = Field(
        None, description="Only these modes (repeat the parameter for several); all when absent or empty."
    )


# -- threads ----------------------------------------------------------------------------------------


class StateUpdate(Body):
    """One update of a superstep: `values` (or a `command`) written as if `as_node` had run."""

    values: Any = None
    command: Command | None = None
    as_node: str | None = None


class Superstep(Body):
    updates: list[StateUpdate] = Field(default_factory=list, max_length=100)


class ThreadCreate(Body):
    thread_id: UuidStr | None = None
    metadata: Metadata | None = None
    if_exists: Literal["raise", "do_nothing"] | None = "raise"
    supersteps: list[Superstep] | None = Field(
        None,
        max_length=1000,
        description="State updates applied to the new thread, one checkpoint per superstep "
        "(needs `metadata.graph_id`).",
    )
    ttl: TtlField | None = None


class ThreadPatch(Body):
    metadata: Metadata | None = None
    ttl: TtlField | None = None


class ThreadSearch(Body):
    ids: list[UuidStr] | None = None
    metadata: JsonObject | None = None
    values: JsonObject | None = Field(None, description="Subset match on the thread's values.")
    status: ThreadStatusName | None = None
    limit: Limit = 10
    offset: Offset = 0
    sort_by: ThreadSortBy | None = None
    sort_order: SortOrder | None = None
    select: list[ThreadField] | None = None
    extract: Extract | None = None


class ThreadCount(Body):
    metadata: JsonObject | None = None
    values: JsonObject | None = None
    status: ThreadStatusName | None = None


class ThreadStateUpdate(Body):
    values: JsonObject | list[Any] | None = None
    checkpoint: CheckpointConfig | None = None
    checkpoint_id: str | None = None
    as_node: str | None = None


class ThreadStateCheckpoint(Body):
    checkpoint: CheckpointConfig
    subgraphs: bool | None = False


class ThreadHistory(Body):
    limit: Limit = 10
    before: str | CheckpointConfig | None = None
    metadata: JsonObject | None = None
    checkpoint: CheckpointConfig | None = None


class StateQuery(Query):
    subgraphs: bool = False


class HistoryQuery(Query):
    limit: Limit = 10
    before: str | None = None


# -- assistants -------------------------------------------------------------------------------------


class AssistantSearch(Body):
    metadata: JsonObject | None = None
    graph_id: str | None = None
    name: str | None = None
    limit: Limit = 10
    offset: Offset = 0
    sort_by: AssistantSortBy | None = None
    sort_order: SortOrder | None = None
    select: list[AssistantField] | None = None


class AssistantCount(Body):
    metadata: JsonObject | None = None
    graph_id: str | None = None
    name: str | None = None


class GraphQuery(Query):
    xray: bool | Annotated[int, Field(ge=0, le=100)] = Field(
        False, description="Include subgraphs (an integer limits the depth)."
    )


class SubgraphsQuery(Query):
    recurse: bool = False


class OkQuery(Query):
    check_db: Annotated[int, Field(ge=0, le=1)] = Field(0, description="1: also check the store.")


# -- responses (documentation; handlers render plain dicts with the same shape) -----------------------


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorOut(Out):
    detail: str
    errors: list[JsonObject] | None = None


class ThreadOut(Out):
    thread_id: str = Field(json_schema_extra={"format": "uuid"})
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    state_updated_at: str = Field(json_schema_extra={"format": "date-time"})
    metadata: JsonObject
    status: ThreadStatusName
    config: JsonObject
    values: JsonObject | None
    interrupts: JsonObject
    error: JsonObject | None = None


class RunOut(Out):
    run_id: str = Field(json_schema_extra={"format": "uuid"})
    thread_id: str = Field(json_schema_extra={"format": "uuid"})
    assistant_id: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    status: RunStatusName
    metadata: JsonObject
    multitask_strategy: MultitaskStrategyName
    kwargs: JsonObject


class AssistantOut(Out):
    assistant_id: str
    graph_id: str
    config: JsonObject
    context: JsonObject
    metadata: JsonObject
    name: str
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    updated_at: str = Field(json_schema_extra={"format": "date-time"})
    version: int
    description: str | None


class GraphSchemaOut(Out):
    graph_id: str
    input_schema: JsonObject | None = None
    output_schema: JsonObject | None = None
    state_schema: JsonObject | None = None
    config_schema: JsonObject | None = None
    context_schema: JsonObject | None = None


class ThreadStateOut(Out):
    values: JsonObject | list[Any] | None
    next: list[str]
    tasks: list[JsonObject]
    checkpoint: JsonObject | None
    metadata: JsonObject | None
    created_at: str | None
    parent_checkpoint: JsonObject | None
    interrupts: list[JsonObject]


class CheckpointOut(Out):
    checkpoint: JsonObject
    configurable: JsonObject | None = None
    checkpoint_id: str | None = None


class OkOut(Out):
    ok: bool


class InfoOut(Out):
    version: str
    flags: JsonObject
