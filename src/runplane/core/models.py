"""The domain records: threads, runs and what a store needs to create or finish them.

Wire words (statuses, strategies) are the `langgraph_sdk.schema` ones, so the API never translates them.
Records are frozen: a store returns fresh copies and nobody mutates what it got back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias, TypedDict, get_args

RunStatus: TypeAlias = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
"""`pending` waits for a worker; `running` holds a lease; the other four are terminal."""

ThreadStatus: TypeAlias = Literal["idle", "busy", "interrupted", "error"]
"""`busy` while the thread has a pending or running run; otherwise the outcome of its last run."""

MultitaskStrategy: TypeAlias = Literal["reject", "interrupt", "rollback", "enqueue"]
"""What a new run does when its thread already has an active (pending or running) run."""

CancelAction: TypeAlias = Literal["interrupt", "rollback"]
"""`interrupt` keeps the checkpoints the run reached; `rollback` restores the thread and deletes the run."""

IfNotExists: TypeAlias = Literal["create", "reject"]
"""What creating a run on an unknown thread does."""

RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
THREAD_STATUSES: tuple[ThreadStatus, ...] = get_args(ThreadStatus)
MULTITASK_STRATEGIES: tuple[MultitaskStrategy, ...] = get_args(MultitaskStrategy)
CANCEL_ACTIONS: tuple[CancelAction, ...] = get_args(CancelAction)

TERMINAL_RUN_STATUSES: frozenset[RunStatus] = frozenset({"success", "error", "timeout", "interrupted"})
ACTIVE_RUN_STATUSES: frozenset[RunStatus] = frozenset({"pending", "running"})

SINGLE_USER = ""
"""The owner of every record when no identity is given (single-user mode)."""

Json: TypeAlias = dict[str, Any]


class RunKwargs(TypedDict, total=False):
    """What the API stores in `Run.kwargs` and the worker executes: the API's words, already
    validated. Every key is optional; the worker applies LangGraph's defaults."""

    graph_id: str
    input: Any
    command: Json
    config: Json
    context: Json
    #: SDK stream modes requested (values, updates, messages, messages-tuple, custom, events, debug,
    #: tasks, checkpoints); the worker publishes exactly these.
    stream_mode: list[str]
    stream_subgraphs: bool
    stream_resumable: bool
    interrupt_before: list[str] | Literal["*"]
    interrupt_after: list[str] | Literal["*"]
    checkpoint: Json
    checkpoint_id: str
    durability: Literal["sync", "async", "exit"]
    #: Seconds after which the run ends `timeout`; None uses the worker's default.
    timeout_seconds: float
    webhook: str
    feedback_keys: list[str]
    #: The version of the assistant whose config and context were merged in (at creation).
    assistant_version: int
    #: A stateless run's own thread (`on_completion="delete"`): the worker deletes the thread, its
    #: runs and checkpoints once the run has ended, as LangGraph's server does.
    temporary: bool


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts reported by the chat models a run called (LangChain usage metadata)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.total_tokens + other.total_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation: the unit that runs are serialized on."""

    thread_id: str
    owner: str
    status: ThreadStatus
    created_at: datetime
    updated_at: datetime
    metadata: Json = field(default_factory=dict)
    #: Last known graph state, written by the worker when a run ends (the checkpointer is the truth).
    values: Json | None = None
    #: Pending human-in-the-loop interrupts by task id, as the SDK's `Thread.interrupts`.
    interrupts: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Run:
    """One invocation of an assistant (graph) on a thread."""

    run_id: str
    thread_id: str
    assistant_id: str
    owner: str
    status: RunStatus
    multitask_strategy: MultitaskStrategy
    created_at: datetime
    updated_at: datetime
    metadata: Json = field(default_factory=dict)
    #: What to execute: input, command, config, stream_mode, ... (opaque to the core).
    kwargs: Json = field(default_factory=dict)
    #: The run may not start before this instant (`after_seconds`).
    not_before: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str | None = None
    model_name: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    #: How many times a worker claimed the run; also the fencing token of the current claim.
    attempt: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    #: A durable cancel request; the worker that holds the lease acts on it.
    cancel_action: CancelAction | None = None
    idempotency_key: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


@dataclass(frozen=True, slots=True)
class NewThread:
    """What a caller asks for when creating a thread."""

    owner: str = SINGLE_USER
    thread_id: str | None = None
    metadata: Json = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewRun:
    """What a caller asks for when creating a run; the store admits it atomically."""

    run_id: str
    thread_id: str
    assistant_id: str
    owner: str = SINGLE_USER
    multitask_strategy: MultitaskStrategy = "enqueue"
    if_not_exists: IfNotExists = "reject"
    metadata: Json = field(default_factory=dict)
    kwargs: Json = field(default_factory=dict)
    not_before: datetime | None = None
    idempotency_key: str | None = None
    #: Digest of the payload, so a replayed idempotency key with another payload is a conflict.
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """What a store did to admit a run: the new run and the runs it asked to cancel."""

    run: Run
    #: Running runs that got a durable cancel request (their workers must be told).
    cancel_requested: tuple[Run, ...] = ()
    #: Pending runs that were cancelled (interrupted or, for rollback, deleted) without starting.
    cancelled_pending: tuple[Run, ...] = ()
    #: True when an earlier run with the same idempotency key was returned instead.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What a cancel request did."""

    run: Run
    #: True when the store finished it at once (it was pending); False when a worker must stop it.
    settled: bool
    #: True when a rollback of a pending run deleted it.
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a worker ends a run it holds."""

    status: RunStatus
    thread_status: ThreadStatus
    error: str | None = None
    thread_values: Json | None = None
    thread_interrupts: Json = field(default_factory=dict)
    model_name: str | None = None
    usage: TokenUsage | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs of a thread to list."""

    status: RunStatus | None = None
    limit: int = 10
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Which threads to search: metadata is a subset match, `ids` restricts to those ids."""

    metadata: Json = field(default_factory=dict)
    status: ThreadStatus | None = None
    ids: tuple[str, ...] | None = None
    limit: int = 10
    offset: int = 0
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"


# -- assistants (configured, versioned graphs) -------------------------------------------------------

AssistantSortBy: TypeAlias = Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"]


@dataclass(frozen=True, slots=True)
class NewAssistant:
    """What a caller asks for when creating an assistant (version 1)."""

    assistant_id: str
    graph_id: str
    owner: str = SINGLE_USER
    name: str = "Untitled"
    description: str | None = None
    config: Json = field(default_factory=dict)
    context: Json = field(default_factory=dict)
    metadata: Json = field(default_factory=dict)
    #: A graph's own assistant (LangGraph's `created_by: system`): every owner may read it.
    system: bool = False


@dataclass(frozen=True, slots=True)
class AssistantPatch:
    """A new version of an assistant: None keeps the latest version's value; `metadata` is merged."""

    graph_id: str | None = None
    config: Json | None = None
    context: Json | None = None
    metadata: Json | None = None
    name: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class AssistantFilter:
    """Which assistants to search: metadata is a subset match, `name` a case-insensitive substring,
    `graph_ids` the graphs this server serves (assistants of other graphs are hidden)."""

    graph_id: str | None = None
    name: str | None = None
    metadata: Json = field(default_factory=dict)
    graph_ids: tuple[str, ...] | None = None
    limit: int = 10
    offset: int = 0
    sort_by: AssistantSortBy = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"


# -- thread lifecycle (TTL, prune) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadTtl:
    """A thread's time to live (`ttl` on create and update): swept `minutes` after its last update."""

    minutes: float
    #: LangGraph's only strategy: delete the thread, its runs and its checkpoints.
    strategy: Literal["delete"] = "delete"
