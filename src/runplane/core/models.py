"""The domain records: threads, runs and what a store needs to create or finish them.

Wire words (statuses, strategies) are the `langgraph_sdk.schema` ones, so the API never translates them.
Records are frozen: a store returns fresh copies and nobody mutates what it got back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, TypeAlias, get_args

from runplane.core.run_kwargs import RunKwargs

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
    #: The config runs on it were admitted with (tags, recursion_limit...), as LangGraph's server
    #: keeps it (see `lifecycle.thread_config_after_admission`).
    config: Json = field(default_factory=dict)
    #: Why its last run failed (the run's `error`), None unless that run ended in error.
    error: str | None = None


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
    #: What to execute: input, command, config, stream_mode, ... A store may pass the stored JSON
    #: (a dict): it is read as `RunKwargs.from_json` reads it.
    kwargs: RunKwargs = field(default_factory=RunKwargs)
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

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, RunKwargs):  # the stored JSON, straight from a row
            object.__setattr__(self, "kwargs", RunKwargs.from_json(self.kwargs))

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
class Claimant:
    """A worker that takes a run at its admission, with the lease a claim of its would take."""

    worker_id: str
    lease_seconds: float


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
    #: The run's `RunKwargs` as the store keeps them (`RunKwargs.to_json()`).
    kwargs: Json = field(default_factory=dict)
    not_before: datetime | None = None
    idempotency_key: str | None = None
    #: Digest of the payload, so a replayed idempotency key with another payload is a conflict.
    fingerprint: str | None = None
    #: The run's config as its thread should show it once the run is admitted (merged over the
    #: thread's own by `lifecycle.thread_config_after_admission`); None leaves the thread's as is.
    thread_config: Json | None = None
    #: Metadata of the thread when `if_not_exists="create"` creates it.
    thread_metadata: Json = field(default_factory=dict)
    #: Merged into the thread's metadata (top-level keys) in the admission transaction, when that
    #: changes it: which graph ran last, for the state endpoints. Written by the admission rather
    #: than after it, so no second lock of the thread races the worker's claim (issue 18).
    thread_metadata_update: Json = field(default_factory=dict)
    #: Set when a cron fires this run: admitted only together with the claim of that slot.
    cron: CronFire | None = None
    #: A worker of the admitting process with a free slot: the store admits the run already
    #: claimed by it when the run can start at once (`lifecycle.starts_at_admission`).
    claim_for: Claimant | None = None
    #: The assistant the run was built from, as the caller read it (perhaps from a cache): the
    #: store admits the run only if that is still the assistant's current version, and raises
    #: `AssistantChanged` otherwise (`lifecycle.check_assistant_unchanged`). None: no check.
    assistant_seen: AssistantSeen | None = None


@dataclass(frozen=True, slots=True)
class AssistantSeen:
    """Which assistant a run was built from: a version of the assistant created at `created_at`.
    Versions are immutable, and a deleted assistant created again has a new `created_at`, so the
    pair names the assistant's content."""

    version: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Admission:
    """What a store did to admit a run: the new run and the runs it asked to cancel."""

    #: The new run: `pending`, or `running` (attempt 1, leased) when `NewRun.claim_for` took it.
    run: Run
    #: Running runs that got a durable cancel request (their workers must be told).
    cancel_requested: tuple[Run, ...] = ()
    #: Pending runs that were cancelled (interrupted or, for rollback, deleted) without starting.
    cancelled_pending: tuple[Run, ...] = ()
    #: True when an earlier run with the same idempotency key was returned instead.
    replayed: bool = False

    @property
    def claimed(self) -> bool:
        """The admission claimed the new run for `NewRun.claim_for`."""
        return not self.replayed and self.run.status == "running"

    @property
    def as_created(self) -> Run:
        """The new run as the admission created it, before its claim: what its creator is answered
        (LangGraph's server answers a new run `pending`, and a claimed one was, in the same
        transaction)."""
        if not self.claimed:
            return self.run
        return replace(
            self.run,
            status="pending",
            attempt=0,
            lease_owner=None,
            lease_expires_at=None,
            started_at=None,
            updated_at=self.run.created_at,
        )


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What a cancel request did."""

    run: Run
    #: True when the store finished it at once (it was pending); False when a worker must stop it.
    settled: bool
    #: True when a rollback of a pending run deleted it.
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The run queue at a glance, over every owner (what operators watch)."""

    #: Runs waiting for a worker (including those not yet due).
    pending: int = 0
    #: Runs a worker holds.
    running: int = 0
    #: Distinct workers holding at least one run.
    busy_workers: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """What a claim took, and what it saw of the rest of the queue in the same transaction."""

    #: The run now held (`running`, with a lease); None when nothing was claimable.
    run: Run | None
    #: Whether another run was claimable as this claim saw the queue (`lifecycle.head_is_claimable`).
    #: False tells the worker to wait for a wake-up hint rather than claim again at once: a run
    #: admitted or handed back after the claim's snapshot sends one, after its commit.
    more: bool = False
    #: Nothing was claimed, yet a due queue head was passed over because another transaction held
    #: its thread (PostgreSQL's SKIP LOCKED): when that transaction ends no hint may come, so the
    #: worker looks again shortly (`Worker.claim_retry_seconds`). False when nothing was due (or
    #: the run was claimed): a claim that lost a hinted run to another worker need not look again.
    contended: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """A run a worker ended, and what its end did to its thread's queue in the same transaction."""

    run: Run
    #: Whether the thread's next run became claimable (`lifecycle.head_is_claimable`): it was
    #: queued behind the run that ended (enqueue, interrupt or rollback strategies), and no hint
    #: says so, so the worker that ended the run looks again at once.
    next_claimable: bool = False


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
class ThreadOutput:
    """What a run left on its thread for whoever waited for it: the thread's values and pending
    interrupts as the run ended (`Thread` has the same two attributes)."""

    values: Json | None
    interrupts: Json


@dataclass(frozen=True, slots=True)
class ThreadStateWrite:
    """The graph state a state update leaves on its thread record (see `Store.release_thread`)."""

    values: Json | None
    interrupts: Json
    #: Applied only when no run is active on the thread (none can be while the update holds it).
    status: ThreadStatus


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


# -- crons ------------------------------------------------------------------------------------------

OnRunCompleted: TypeAlias = Literal["delete", "keep"]
"""What a stateless cron does with the thread of each fire once its run ended."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A schedule that creates a run at each slot: on its thread, or (stateless) on a new thread."""

    cron_id: str
    owner: str
    assistant_id: str
    #: None: stateless, each fire gets a new thread (kept or deleted after its run).
    thread_id: str | None
    #: A cron expression (five fields; a sixth is seconds).
    schedule: str
    #: IANA zone the schedule is read in; None is UTC.
    timezone: str | None
    end_time: datetime | None
    enabled: bool
    on_run_completed: OnRunCompleted | None
    #: The request as the caller gave it (the SDK's `Cron.payload`).
    payload: Json
    #: What each fire runs (`RunKwargs.to_json()`), built from the payload by the API.
    kwargs: Json
    metadata: Json
    multitask_strategy: MultitaskStrategy
    #: The next slot to fire; the truth that schedulers claim by a conditional update.
    next_run_date: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewCron:
    """What a caller asks for when creating a cron (already validated, `next_run_date` computed)."""

    cron_id: str
    owner: str
    assistant_id: str
    thread_id: str | None
    schedule: str
    timezone: str | None
    end_time: datetime | None
    enabled: bool
    on_run_completed: OnRunCompleted | None
    payload: Json
    kwargs: Json
    metadata: Json
    multitask_strategy: MultitaskStrategy
    next_run_date: datetime | None


@dataclass(frozen=True, slots=True)
class CronChanges:
    """A cron update: every field that is not None replaces the stored one (`metadata` merges)."""

    schedule: str | None = None
    timezone: str | None = None
    end_time: datetime | None = None
    clear_end_time: bool = False
    enabled: bool | None = None
    on_run_completed: OnRunCompleted | None = None
    payload: Json | None = None
    kwargs: Json | None = None
    metadata: Json | None = None
    #: Recomputed by the manager whenever schedule, timezone or enabled change.
    next_run_date: datetime | None = None
    set_next_run_date: bool = False


CronSortBy: TypeAlias = Literal[
    "cron_id", "assistant_id", "thread_id", "next_run_date", "end_time", "created_at", "updated_at"
]
CRON_SORT_FIELDS: tuple[CronSortBy, ...] = get_args(CronSortBy)


@dataclass(frozen=True, slots=True)
class CronFilter:
    """Which crons to search: metadata is a subset match."""

    assistant_id: str | None = None
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: Json = field(default_factory=dict)
    limit: int = 10
    offset: int = 0
    sort_by: CronSortBy = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"


@dataclass(frozen=True, slots=True)
class CronFire:
    """The slot a run is admitted for: the store admits the run only if it moves the cron from
    `slot` to `next_run_date` in the same transaction, so one slot fires exactly once."""

    cron_id: str
    slot: datetime
    next_run_date: datetime | None


# -- webhooks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One webhook to POST, from the durable outbox written with the run's terminal status."""

    delivery_id: str
    run_id: str
    url: str
    #: The body (the run's final record, the reference's shape) without `webhook_sent_at`.
    payload: Json
    #: Attempts made so far, this one included once claimed.
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    last_error: str | None = None
    #: `pending` until delivered (then the row is gone); `failed` once its attempts are spent.
    status: Literal["pending", "failed"] = "pending"


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


def metadata_after_admission(current: Json, update: Json) -> Json | None:
    """A thread's metadata with an admission's `thread_metadata_update` merged in (top-level keys),
    or None when that changes nothing, so the admission writes (and bumps) nothing."""
    if all(k in current and current[k] == v for k, v in update.items()):
        return None
    return {**current, **update}
