"""A Hypothesis state machine that drives `InMemoryStore` and another backend side by side.

Every step runs the same call on both stores, one after the other, and asserts that they return the
same records or raise the same error. Ids are explicit and both stores read one `FakeClock`, so the
records must be equal field for field, timestamps included. An invariant then compares everything
visible through the caller API.

Hypothesis's stateful runner is synchronous: each machine owns an event loop, created in `__init__`
and closed in `teardown`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, is_dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runplane.core.errors import RunplaneError
from runplane.core.models import (
    CANCEL_ACTIONS,
    MULTITASK_STRATEGIES,
    Admission,
    CancelAction,
    Claimed,
    Json,
    NewRun,
    NewThread,
    Outcome,
    Run,
    RunFilter,
    Thread,
    ThreadFilter,
    ThreadStateWrite,
    TokenUsage,
)
from runplane.core.store import Store
from runplane.stores import open_store
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock
from tests.conformance._support import PostgresDatabases, hypothesis_profile, new_run, require_backend

T = TypeVar("T")

THREADS = ("t0", "t1", "t2")
OWNERS = ("", "alice")
#: Mostly the owner of most things, so that steps act instead of answering NotFound.
SOME_OWNER = st.sampled_from(("alice",) * 7 + ("",))
WORKERS = ("w1", "w2")
METADATA: tuple[Json, ...] = ({}, {"k": 1}, {"k": "v", "n": None})
VALUES = (None, {"v": 1}, {"messages": ["a", "b"]})
USAGES = (None, TokenUsage(1, 2, 3), TokenUsage(5, 0, 5))
MODELS = (None, "m1", "m2")
TERMINAL = ("success", "error", "timeout", "interrupted")
THREAD_OUTCOMES = ("idle", "error", "interrupted")
#: Mostly the held attempt; sometimes a stale or future one, to exercise fencing.
ATTEMPT_DELTAS = st.sampled_from((0, 0, 0, 0, -1, 1))
PICK = st.integers(min_value=0, max_value=10_000)
#: State updates' holds (`reserve_thread`): two, so that one may meet the other's.
HOLD_TOKENS = ("h1", "h2")


def normalize(value: Any) -> Any:
    """Comparable form: dataclasses as dicts, errors as their class (messages may differ)."""
    if isinstance(value, RunplaneError):
        return ("raised", type(value).__name__, getattr(value, "action", None))
    if is_dataclass(value) and not isinstance(value, type):
        return normalize(asdict(value))
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        return {key: normalize(item) for key, item in value.items()}
    return value


def by_run_id(runs: list[Run] | tuple[Run, ...]) -> list[Run]:
    """Order of several affected runs is not part of the contract."""
    return sorted(runs, key=lambda run: run.run_id)


async def _outcome(call: Awaitable[T]) -> T | RunplaneError:
    try:
        return await call
    except RunplaneError as exc:
        return exc


class StoreAgreement(RuleBasedStateMachine):
    """Drive the reference and the store at `other_url` with the same steps."""

    def __init__(self, other_url: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.reference: Store = InMemoryStore(clock=self.clock)
        self.other: Store = open_store(other_url, clock=self.clock)
        self.run(self.other.open())
        self.counter = 0
        self.run_ids: list[str] = []
        #: run id -> attempt of its latest claim (from the reference).
        self.claims: dict[str, int] = {}
        #: Claimed runs no step has moved on yet: worker steps mostly aim at these.
        self.live: set[str] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def both(self, call: Callable[[Store], Awaitable[T]], *, label: str = "") -> T | RunplaneError:
        expected = self.run(_outcome(call(self.reference)))
        actual = self.run(_outcome(call(self.other)))
        assert normalize(actual) == normalize(expected), (
            f"{label or 'call'} disagrees:\n  memory: {expected!r}\n  other:  {actual!r}"
        )
        return expected

    def teardown(self) -> None:
        try:
            self.run(self.other.close())
        finally:
            self.loop.close()

    # -- helpers ----------------------------------------------------------------------------------

    def _pick(self, items: list[str], pick: int) -> str:
        return items[pick % len(items)]

    def _held(self, pick: int, delta: int) -> tuple[str, int]:
        """A claimed run and an attempt: usually a live claim, sometimes an old one or a wrong attempt."""
        pool = sorted(self.live) if self.live and pick % 5 else sorted(self.claims)
        run_id = self._pick(pool, pick // 5)
        return run_id, self.claims[run_id] + delta

    def _moved_on(self, result: object, run_id: str) -> None:
        if not isinstance(result, RunplaneError):
            self.live.discard(run_id)

    # -- threads ----------------------------------------------------------------------------------

    @initialize(
        owners=st.lists(st.sampled_from((None, "alice", "alice", "alice", "")), min_size=3, max_size=3),
        runs=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    )
    def seed(self, owners: list[str | None], runs: list[int]) -> None:
        """Start with some threads and queued runs, so that early steps act on something."""
        for thread_id, owner, count in zip(THREADS, owners, runs, strict=True):
            if owner is None:
                continue
            new = NewThread(owner=owner, thread_id=thread_id, metadata={"seed": thread_id})
            self.both(partial(_create_thread, new=new), label="create_thread")
            for _ in range(count):
                self._admit(new_run(self._next_run_id(), thread_id, owner=owner, if_not_exists="reject"))

    @rule(
        thread_id=st.sampled_from(THREADS),
        owner=SOME_OWNER,
        if_exists=st.sampled_from(("raise", "do_nothing")),
        metadata=st.sampled_from(METADATA),
    )
    def create_thread(self, thread_id: str, owner: str, if_exists: Any, metadata: dict[str, Any]) -> None:
        new = NewThread(owner=owner, thread_id=thread_id, metadata=metadata)
        self.both(lambda s: s.create_thread(new, if_exists=if_exists), label="create_thread")

    @rule(
        thread_id=st.sampled_from(THREADS),
        owner=SOME_OWNER,
        metadata=st.sampled_from(METADATA),
        values=st.sampled_from(VALUES),
        status=st.sampled_from((None, "idle", "error", "interrupted")),
    )
    def edit_thread(self, thread_id: str, owner: str, metadata: Any, values: Any, status: Any) -> None:
        if metadata:
            self.both(lambda s: s.update_thread(thread_id, owner, metadata), label="update_thread")
        else:
            interrupts = {"task": [{"value": 1}]} if status == "interrupted" else {}
            self.both(
                lambda s: s.set_thread_state(thread_id, owner, values, interrupts, status),
                label="set_thread_state",
            )

    @rule(
        thread_id=st.sampled_from(THREADS),
        owner=SOME_OWNER,
        token=st.sampled_from(HOLD_TOKENS),
        seconds=st.sampled_from((10.0, 30.0)),
    )
    def hold_thread(self, thread_id: str, owner: str, token: str, seconds: float) -> None:
        """A state update takes the thread: admissions on it are turned away until it lets go."""
        self.both(lambda s: s.reserve_thread(thread_id, owner, token, seconds), label="reserve_thread")

    @rule(
        thread_id=st.sampled_from(THREADS),
        token=st.sampled_from(HOLD_TOKENS),
        values=st.sampled_from(VALUES),
        status=st.sampled_from((None, "idle", "interrupted")),
    )
    def let_go(self, thread_id: str, token: str, values: Any, status: Any) -> None:
        state = None if status is None else ThreadStateWrite(values, {}, status)
        self.both(lambda s: s.release_thread(thread_id, token, state), label="release_thread")

    @rule(thread_id=st.sampled_from(THREADS), owner=SOME_OWNER, dice=st.integers(0, 3))
    def delete_thread(self, thread_id: str, owner: str, dice: int) -> None:
        if dice:
            return  # rarely: it wipes out most of the state the other rules need

        async def call(s: Store) -> list[Run]:
            return by_run_id(await s.delete_thread(thread_id, owner))

        deleted = self.both(call, label="delete_thread")
        if isinstance(deleted, list):
            self.live.difference_update(run.run_id for run in deleted)

    # -- runs -------------------------------------------------------------------------------------

    @rule(
        thread_id=st.sampled_from(THREADS),
        owner=SOME_OWNER,
        strategy=st.sampled_from(MULTITASK_STRATEGIES),
        if_not_exists=st.sampled_from(("create", "create", "reject")),
        delay=st.sampled_from((None, None, 0.0, 5.0)),
        key=st.sampled_from((None, None, "k1", "k2")),
        digest=st.sampled_from((None, "a", "b")),
        reuse_id=st.integers(min_value=0, max_value=9),
        queued=st.sampled_from((0, 0, 1, 2)),
    )
    def create_run(
        self,
        thread_id: str,
        owner: str,
        strategy: Any,
        if_not_exists: Any,
        delay: float | None,
        key: str | None,
        digest: str | None,
        reuse_id: int,
        queued: int,
    ) -> None:
        """Admit a run, and sometimes queue a few plain runs behind it (to build queues quickly)."""
        if reuse_id == 0 and self.run_ids:
            run_id = self.run_ids[-1]  # a duplicate id: Conflict (unless the old one was deleted)
        else:
            run_id = self._next_run_id()
        not_before = None if delay is None else self.clock.now() + timedelta(seconds=delay)
        self._admit(
            new_run(
                run_id,
                thread_id,
                owner=owner,
                strategy=strategy,
                if_not_exists=if_not_exists,
                metadata={"n": self.counter},
                kwargs={"input": {"x": self.counter}},
                not_before=not_before,
                idempotency_key=key,
                fingerprint=digest,
            )
        )
        for n in range(queued):
            self._admit(
                new_run(
                    self._next_run_id(), THREADS[(THREADS.index(thread_id) + n) % len(THREADS)], owner=owner
                )
            )

    def _next_run_id(self) -> str:
        self.counter += 1
        run_id = f"r{self.counter:03d}"
        self.run_ids.append(run_id)
        return run_id

    def _admit(self, new: NewRun) -> None:
        async def call(s: Store) -> Admission:
            admission = await s.create_run(new)
            return replace(
                admission,
                cancel_requested=tuple(by_run_id(admission.cancel_requested)),
                cancelled_pending=tuple(by_run_id(admission.cancelled_pending)),
            )

        self.both(call, label="create_run")

    @precondition(lambda self: self.run_ids)
    @rule(
        pick=PICK,
        owner=SOME_OWNER,
        action=st.sampled_from(CANCEL_ACTIONS),
        with_thread=st.sampled_from((None, None, None, "t0")),
    )
    def request_cancel(self, pick: int, owner: str, action: Any, with_thread: str | None) -> None:
        run_id = self._pick(self.run_ids, pick)
        self.both(lambda s: s.request_cancel(run_id, owner, action, with_thread), label="request_cancel")

    @precondition(lambda self: self.run_ids)
    @rule(pick=PICK, owner=SOME_OWNER)
    def delete_run(self, pick: int, owner: str) -> None:
        run_id = self._pick(self.run_ids, pick)
        self.both(lambda s: s.delete_run(run_id, owner), label="delete_run")

    # -- workers ----------------------------------------------------------------------------------

    @rule(worker_id=st.sampled_from(WORKERS), lease=st.sampled_from((10.0, 30.0)))
    def claim(self, worker_id: str, lease: float) -> None:
        # With what the claim saw of the rest of the queue (`Claimed.more`): the stores agree on it.
        claimed = self.both(lambda s: s.claim_and_look(worker_id, lease), label="claim_and_look")
        if isinstance(claimed, Claimed) and claimed.run is not None:
            self.claims[claimed.run.run_id] = claimed.run.attempt
            self.live.add(claimed.run.run_id)

    @rule(
        worker_id=st.sampled_from(WORKERS),
        then=st.sampled_from(("finish", "finish", "progress", "release", "discard", "cancel", "keep")),
        status=st.sampled_from(TERMINAL),
        model=st.sampled_from(MODELS),
        usage=st.sampled_from(USAGES),
    )
    def claim_and_work(self, worker_id: str, then: str, status: Any, model: Any, usage: Any) -> None:
        """Claim, then act on the claim at once: reaches deep lifecycles in few steps."""
        claimed = self.both(lambda s: s.claim_run(worker_id, 30.0), label="claim_run")
        if not isinstance(claimed, Run):
            return
        run_id, attempt = claimed.run_id, claimed.attempt
        self.claims[run_id] = attempt
        self.live.add(run_id)
        result: object = None
        if then == "finish":
            outcome = Outcome(
                status=status,
                thread_status="error" if status == "error" else "idle",
                model_name=model,
                usage=usage,
            )
            result = self.both(lambda s: s.finish_run(run_id, attempt, outcome), label="finish_run")
        elif then == "progress":
            self.both(
                lambda s: s.record_progress(run_id, attempt, model_name=model, usage=usage),
                label="record_progress",
            )
            return
        elif then == "release":
            result = self.both(lambda s: s.release_run(run_id, attempt), label="release_run")
        elif then == "discard":
            result = self.both(lambda s: s.discard_run(run_id, attempt), label="discard_run")
        elif then == "cancel":
            action: CancelAction = "rollback" if status == "error" else "interrupt"
            self.both(lambda s: s.request_cancel(run_id, claimed.owner, action), label="request_cancel")
            return
        else:
            return
        self._moved_on(result, run_id)

    @precondition(lambda self: self.claims)
    @rule(
        pick=PICK,
        delta=ATTEMPT_DELTAS,
        worker_id=st.sampled_from(WORKERS),
        lease=st.sampled_from((10.0, 30.0)),
    )
    def renew(self, pick: int, delta: int, worker_id: str, lease: float) -> None:
        run_id, attempt = self._held(pick, delta)
        self.both(lambda s: s.renew_lease(run_id, attempt, worker_id, lease), label="renew_lease")

    @precondition(lambda self: self.claims)
    @rule(pick=PICK, delta=ATTEMPT_DELTAS, model=st.sampled_from(MODELS), usage=st.sampled_from(USAGES))
    def record_progress(self, pick: int, delta: int, model: str | None, usage: TokenUsage | None) -> None:
        run_id, attempt = self._held(pick, delta)
        self.both(
            lambda s: s.record_progress(run_id, attempt, model_name=model, usage=usage),
            label="record_progress",
        )

    @precondition(lambda self: self.claims)
    @rule(
        pick=PICK,
        delta=ATTEMPT_DELTAS,
        status=st.sampled_from(TERMINAL),
        thread_status=st.sampled_from(THREAD_OUTCOMES),
        values=st.sampled_from(VALUES),
        model=st.sampled_from(MODELS),
        usage=st.sampled_from(USAGES),
    )
    def finish(
        self,
        pick: int,
        delta: int,
        status: Any,
        thread_status: Any,
        values: Any,
        model: str | None,
        usage: TokenUsage | None,
    ) -> None:
        run_id, attempt = self._held(pick, delta)
        outcome = Outcome(
            status=status,
            thread_status=thread_status,
            error="Boom" if status == "error" else None,
            thread_values=values,
            thread_interrupts={"task": [1]} if thread_status == "interrupted" else {},
            model_name=model,
            usage=usage,
        )
        # With whether the thread's next run became claimable (`Finished.next_claimable`).
        result = self.both(lambda s: s.finish_and_look(run_id, attempt, outcome), label="finish_and_look")
        self._moved_on(result, run_id)

    @precondition(lambda self: self.claims)
    @rule(pick=PICK, delta=ATTEMPT_DELTAS)
    def discard(self, pick: int, delta: int) -> None:
        run_id, attempt = self._held(pick, delta)
        result = self.both(lambda s: s.discard_run(run_id, attempt), label="discard_run")
        self._moved_on(result, run_id)

    @precondition(lambda self: self.claims)
    @rule(pick=PICK, delta=ATTEMPT_DELTAS)
    def release(self, pick: int, delta: int) -> None:
        run_id, attempt = self._held(pick, delta)
        result = self.both(lambda s: s.release_run(run_id, attempt), label="release_run")
        self._moved_on(result, run_id)

    @rule(seconds=st.sampled_from((0.5, 6.0, 11.0, 31.0)), max_attempts=st.sampled_from((1, 2, 3)))
    def advance_and_recover(self, seconds: float, max_attempts: int) -> None:
        self.clock.advance(seconds)

        async def expired(s: Store) -> list[Run]:
            return by_run_id(await s.expired_runs())

        runs = self.both(expired, label="expired_runs")
        assert isinstance(runs, list)
        for run in runs:
            result = self.both(
                partial(_recover_run, run_id=run.run_id, attempt=run.attempt, max_attempts=max_attempts),
                label="recover_run",
            )
            self._moved_on(result, run.run_id)

    # -- reads ------------------------------------------------------------------------------------

    @rule(
        owner=SOME_OWNER,
        status=st.sampled_from((None, "idle", "busy", "error", "interrupted")),
        metadata=st.sampled_from(({}, {"k": 1})),
        sort_by=st.sampled_from(("thread_id", "status", "created_at", "updated_at")),
        sort_order=st.sampled_from(("asc", "desc")),
        limit=st.sampled_from((1, 2, 10)),
        offset=st.sampled_from((0, 1)),
    )
    def search(
        self, owner: str, status: Any, metadata: Any, sort_by: Any, sort_order: Any, limit: int, offset: int
    ) -> None:
        filter = ThreadFilter(
            metadata=metadata,
            status=status,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )
        self.both(lambda s: s.search_threads(owner, filter), label="search_threads")
        self.both(lambda s: s.count_threads(owner, filter), label="count_threads")

    @rule(
        thread_id=st.sampled_from(THREADS),
        owner=SOME_OWNER,
        status=st.sampled_from((None, "pending", "running", "success", "interrupted")),
        limit=st.sampled_from((1, 2, 100)),
        offset=st.sampled_from((0, 1)),
    )
    def read_thread(self, thread_id: str, owner: str, status: Any, limit: int, offset: int) -> None:
        filter = RunFilter(status=status, limit=limit, offset=offset)
        self.both(lambda s: s.list_runs(thread_id, owner, filter), label="list_runs")
        self.both(lambda s: s.thread_usage(thread_id, owner), label="thread_usage")

    @invariant()
    def same_visible_state(self) -> None:
        everything = RunFilter(limit=1000)
        for thread_id in THREADS:
            for owner in OWNERS:
                where = f"({thread_id!r}, {owner!r})"
                self.both(partial(_get_thread, thread_id=thread_id, owner=owner), label=f"get_thread{where}")
                self.both(
                    partial(_list_runs, thread_id=thread_id, owner=owner, filter=everything),
                    label=f"list_runs{where}",
                )


async def _create_thread(store: Store, *, new: NewThread) -> Thread:
    return await store.create_thread(new)


async def _recover_run(store: Store, *, run_id: str, attempt: int, max_attempts: int) -> Run:
    return await store.recover_run(run_id, attempt, max_attempts)


async def _get_thread(store: Store, *, thread_id: str, owner: str) -> Thread:
    return await store.get_thread(thread_id, owner)


async def _list_runs(store: Store, *, thread_id: str, owner: str, filter: RunFilter) -> list[Run]:
    return await store.list_runs(thread_id, owner, filter)


AGREEMENT_BACKENDS = [
    pytest.param("sqlite-memory"),
    pytest.param("sqlite-file"),
    pytest.param("postgres", marks=pytest.mark.postgres),
]

#: Examples per backend in the default profile: a file and PostgreSQL are slower per step than
#: `:memory:`, and the cross-backend semantics are the same (the thorough profile runs them all).
_EXAMPLES = {"sqlite-memory": None, "sqlite-file": 15, "postgres": 25}


@pytest.mark.parametrize("backend", AGREEMENT_BACKENDS)
def test_backends_agree_with_memory(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres_databases: PostgresDatabases | None
) -> None:
    require_backend(backend)
    if backend == "postgres" and postgres_databases is None:
        pytest.skip("postgres: RUNPLANE_TEST_POSTGRES_URL is not set")

    def machine() -> StoreAgreement:
        if backend == "sqlite-memory":
            return StoreAgreement("sqlite:///:memory:")
        if backend == "sqlite-file":
            path = tmp_path_factory.mktemp("agreement") / "runplane.db"
            return StoreAgreement(f"sqlite:///{path}")
        assert postgres_databases is not None
        return StoreAgreement(postgres_databases.fresh())

    name = hypothesis_profile()
    profile = settings.get_profile(name)
    examples = _EXAMPLES[backend]
    if examples is not None and name == "runplane-default":
        profile = settings(profile, max_examples=examples)
    # Hypothesis accepts any factory here; its annotation only names the class.
    run_state_machine_as_test(machine, settings=profile)  # type: ignore[arg-type]
