"""The PostgreSQL store against a real server: migrations, several processes (separate pools) racing
on one thread, concurrent claimers, durability under kill -9. Per-method semantics are the
conformance suite's job."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.types.json import Jsonb

from runplane.core.errors import InvalidInput, LeaseLost, StoreUnavailable, ThreadBusy
from runplane.core.models import Claimed, NewRun, NewThread, Outcome, Run, RunFilter
from runplane.db.postgres import parse_url
from runplane.stores import open_store
from runplane.stores.postgres.store import MIGRATIONS, QUERIES, PostgresStore
from runplane.testing import FakeClock
from tests._services import (
    postgres_database,
    require_postgres_url,
)

pytestmark = pytest.mark.postgres

_SCHEMA_QUERIES = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
               is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name
    """,
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 2",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
    """,
    "sequences": "SELECT sequencename, data_type FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
    "versions": "SELECT version, name FROM runplane_migrations ORDER BY version",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), md5(p.prosrc)
        FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1, 2
    """,
}


def _schema(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(query).fetchall() for name, query in _SCHEMA_QUERIES.items()}


@pytest.fixture
def base_url() -> str:
    return require_postgres_url()


@pytest.fixture
def db_url(base_url: str) -> Iterator[str]:
    with postgres_database(base_url) as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stores(db_url: str, clock: FakeClock) -> AsyncIterator[list[PostgresStore]]:
    """Four instances on one database with their own pools, like four processes."""
    opened = [PostgresStore.from_url(db_url, clock=clock, max_size=4) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in opened))
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


def _new_run(run_id: str, thread_id: str, **changes: Any) -> NewRun:
    return NewRun(run_id, thread_id, "agent", **changes)


# -- URLs and the pool ----------------------------------------------------------------------------


def test_url_keeps_libpq_params_and_strips_pool_params() -> None:
    conninfo, pool = parse_url(
        "postgres://u:p%40ss@db.example:5433/app?sslmode=require&pool_min_size=2&pool_max_size=7"
    )
    assert conninfo == "postgresql://u:p%40ss@db.example:5433/app?sslmode=require"
    assert (pool.min_size, pool.max_size) == (2, 7)
    assert parse_url("postgresql://h/db")[0] == "postgresql://h/db"
    assert parse_url("postgresql+psycopg://h/db?application_name=a%20b")[0] == (
        "postgresql://h/db?application_name=a%20b"
    )


@pytest.mark.parametrize(
    "url", ["postgresql://h/db?pool_max_size=x", "postgresql://h/db?pool_min_size=5&pool_max_size=2"]
)
def test_bad_pool_params_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput):
        parse_url(url)


async def test_open_store_accepts_both_schemes(db_url: str, clock: FakeClock) -> None:
    for url in (db_url, db_url.replace("postgresql://", "postgres://", 1) + "?pool_max_size=2"):
        store = open_store(url, clock=clock)
        assert isinstance(store, PostgresStore)
        assert store.checkpointer_url == db_url
        await store.open()
        try:
            thread = await store.create_thread(NewThread(), if_exists="do_nothing")
            assert (await store.get_thread(thread.thread_id, thread.owner)).created_at == clock.now()
        finally:
            await store.close()


async def test_unreachable_server_is_store_unavailable() -> None:
    # Nothing listens on port 1; the pool gives up after pool_timeout.
    store = PostgresStore.from_url("postgresql://127.0.0.1:1/x?connect_timeout=1&pool_timeout=0.5")
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.get_thread("t", "")


async def test_pooled_connections_the_server_closed_are_replaced_not_handed_out(
    db_url: str, clock: FakeClock
) -> None:
    """A checkout costs no check query: a pooled connection the server ended while it sat idle is
    seen closed without one, and replaced; the caller never gets it."""
    async with PostgresStore.from_url(db_url, clock=clock, min_size=3, max_size=3) as store:
        await store.create_thread(NewThread(thread_id="t"))
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
            others = "datname = current_database() AND pid <> pg_backend_pid()"
            await admin.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}")
            for _ in range(500):
                cursor = await admin.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {others}")
                row = await cursor.fetchone()
                if row is not None and row[0] == 0:
                    break
                await asyncio.sleep(0.01)
        for _ in range(4):  # every pooled connection was ended
            assert (await store.get_thread("t", "")).thread_id == "t"


async def test_langgraph_checkpointer_shares_the_database(db_url: str, clock: FakeClock) -> None:
    async with PostgresStore.from_url(db_url, clock=clock) as store:
        async with AsyncPostgresSaver.from_conn_string(store.checkpointer_url) as saver:
            await saver.setup()
        await store.create_run(_new_run("r1", "t1", if_not_exists="create"))
        assert await store.migrate() == []


async def test_a_claim_says_whether_it_passed_a_due_run_over(db_url: str, clock: FakeClock) -> None:
    """`Claimed.contended`: only a due run whose thread another transaction holds makes a claim
    that took nothing worth repeating shortly (the worker's looks after a hint)."""
    async with PostgresStore.from_url(db_url, clock=clock) as store:
        assert await store.claim_and_look("w", 30) == Claimed(None)  # nothing is due
        await store.create_run(_new_run("r1", "t1", if_not_exists="create"))
        async with await psycopg.AsyncConnection.connect(db_url) as other:
            await other.execute("SELECT 1 FROM threads WHERE thread_id = 't1' FOR UPDATE")
            assert await store.claim_and_look("w", 30) == Claimed(None, contended=True)
        won = await store.claim_and_look("w", 30)  # the lock is gone
        assert won.run is not None and won.run.run_id == "r1" and not won.contended
        # Lost to that claim: nothing due is left, so nothing to look for again.
        assert await store.claim_and_look("w2", 30) == Claimed(None)


# -- migrations -----------------------------------------------------------------------------------


async def test_migrating_step_by_step_equals_migrating_at_once(base_url: str, db_url: str) -> None:
    with postgres_database(base_url) as stepwise:
        store = PostgresStore.from_url(stepwise)
        await store.open(migrate=False)
        try:
            for migration in MIGRATIONS:
                assert await store.migrate(target=migration.version) == [migration.version]
                # Numbers may have gaps (branches reserve them): every migration up to this one.
                assert await store.applied_migrations() == [
                    m.version for m in MIGRATIONS if m.version <= migration.version
                ]
        finally:
            await store.close()
        async with PostgresStore.from_url(db_url):
            pass
        assert _schema(stepwise) == _schema(db_url)
        functions = {row[0] for row in _schema(db_url)["functions"]}
        assert {"runplane_admit", "runplane_claim", "runplane_finish"} <= functions


async def test_migrating_twice_is_a_noop(db_url: str) -> None:
    async with PostgresStore.from_url(db_url) as store:
        before = _schema(db_url)
        assert await store.migrate() == []
    async with PostgresStore.from_url(db_url) as store:
        assert await store.applied_migrations() == [m.version for m in MIGRATIONS]
    assert _schema(db_url) == before


async def test_stores_opening_together_both_succeed(db_url: str, clock: FakeClock) -> None:
    stores = [PostgresStore.from_url(db_url, clock=clock) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        for store in stores:
            assert await store.applied_migrations() == [m.version for m in MIGRATIONS]
        thread = await stores[0].create_thread(NewThread(thread_id="t"))
        assert await stores[2].get_thread("t", "") == thread
    finally:
        for store in stores:
            await store.close()


# -- query plans ----------------------------------------------------------------------------------

_NOW = FakeClock().now()
#: The hot path of admissions, claims and worker writes, with sample parameters.
_HOT_QUERIES: dict[str, dict[str, Any]] = {
    "admission_probe": {"run_id": "r", "owner": "", "idempotency_key": "k"},
    "lock_thread": {"thread_id": "t"},
    "active_runs": {"thread_id": "t"},
    "lock_thread_of_run": {"run_id": "r"},
    "get_run_for_update": {"run_id": "r"},
    "renew_lease": {"run_id": "r", "attempt": 1, "worker_id": "w", "lease_expires_at": _NOW},
    "expired_runs": {"now": _NOW, "limit": 10},
    "list_runs": {"thread_id": "t", "status": None, "limit": 10, "offset": 0},
    "get_run": {"run_id": "r", "owner": "", "thread_id": None},
}

#: The statements that call a function (migrations 0017 to 0019), with sample parameters that make each
#: statement of the function run (a due queue head; a run held at attempt 0), and how many
#: statements that is, the calls of nested functions included: their plans are read from
#: `auto_explain`.
_HOT_FUNCTIONS: dict[str, tuple[dict[str, Any], int]] = {
    "admit": (
        {
            "run_id": "new",
            "thread_id": "fresh",
            "assistant_id": "agent",
            "owner": "",
            "multitask_strategy": "reject",
            "now": _NOW,
            "metadata": Jsonb({}),
            "kwargs": Jsonb({}),
            "not_before": None,
            "idempotency_key": "k",
            "fingerprint": None,
            "creates": True,
            "thread_metadata": Jsonb({}),
            "thread_config": Jsonb({"configurable": {}}),
            "thread_metadata_update": Jsonb({"graph_id": "g"}),
            "worker_id": "w",  # admitted claimed (migration 0018)
            "lease_expires_at": _NOW,
            "assistant_version": 1,  # checked (migration 0019): the backlog's assistant
            "assistant_created_at": _NOW,
        },
        10,  # with the assistant's check, the foreign key's check of the thread, and the call of
        # runplane_settle_admitted
    ),
    "check_hold": ({"run_id": "r15001", "attempt": 0}, 1),
    "settle_thread": (
        {
            "thread_id": "t1",
            "outcome": "idle",
            "now": _NOW,
            "set_values": False,
            "values": None,
            "interrupts": None,
            "set_error": True,
            "error": None,
            "due_at": _NOW,
        },
        1,
    ),
    "settle_admitted": ({"thread_id": "t1", "now": _NOW, "config": None, "metadata": None}, 1),
    "claim": ({"worker_id": "w", "lease_expires_at": _NOW, "now": _NOW}, 2),
    "finish": (
        {
            "run_id": "r15001",
            "attempt": 0,
            "now": _NOW,
            "status": "success",
            "error": None,
            "model_name": None,
            "input_tokens": None,
            "output_tokens": None,
            "total_tokens": None,
            "yields_to_cancel": True,
            "thread_status": "idle",
            "sets_error": True,
            "thread_error": None,
            "set_values": False,
            "values": None,
            "interrupts": None,
        },
        5,  # with the call of runplane_settle_thread
    ),
}


#: Partial indexes that hold the queue itself, walked in order to the first due head (a claim's
#: plan, and the look at the rest of the queue in the same statement): bounded by the queue.
_QUEUE_INDEXES = {"threads_queue"}


def _unbounded_scans(node: dict[str, Any]) -> Iterator[str]:
    """Plan nodes that read a whole table or a whole index (no index condition bounds them)."""
    kind = node["Node Type"]
    if kind == "Seq Scan" or (
        kind in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")
        and "Index Cond" not in node
        and node.get("Index Name") not in _QUEUE_INDEXES
    ):
        yield f"{kind} on {node.get('Relation Name') or node.get('Index Name')}"
    for child in node.get("Plans", []):
        yield from _unbounded_scans(child)


_BACKLOG = """
INSERT INTO assistants (assistant_id, owner, graph_id, name, version, created_at, updated_at)
SELECT 'a' || g, '', 'agent', 'a', 1, %(now)s, %(now)s FROM generate_series(1, 1000) AS g;
--
INSERT INTO assistants (assistant_id, owner, graph_id, name, version, created_at, updated_at)
VALUES ('agent', '', 'agent', 'agent', 1, %(now)s, %(now)s);
--
INSERT INTO threads (thread_id, owner, status, created_at, updated_at)
SELECT 't' || g, '', 'busy', %(now)s, %(now)s FROM generate_series(1, 1000) AS g;
--
INSERT INTO runs (run_id, thread_id, assistant_id, owner, status, multitask_strategy, created_at, updated_at)
SELECT 'r' || g, 't' || (g %% 1000 + 1), 'agent', '',
       CASE WHEN g <= 15000 THEN 'success' WHEN g <= 15010 THEN 'running' ELSE 'pending' END,
       'enqueue', %(now)s, %(now)s
FROM generate_series(1, 20000) AS g;
--
UPDATE threads AS t SET queue_seq = (
    SELECT min(r.seq) FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'pending'
) WHERE NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.thread_id = t.thread_id AND r.status = 'running')
"""


async def test_hot_queries_are_bounded_by_an_index(db_url: str) -> None:
    # 20k runs, most of them finished, a backlog of pending ones: a plan that reads a whole table (or
    # walks a whole index) here would read every run on each admission or claim at 100k.
    async with PostgresStore.from_url(db_url):
        pass
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in _BACKLOG.split(";\n--\n"):
            conn.execute(statement, {"now": _NOW})
        conn.execute("ANALYZE")
        for name, params in _HOT_QUERIES.items():
            conn.execute("BEGIN")
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {QUERIES[name]}", params).fetchone()
            conn.execute("ROLLBACK")
            assert row is not None
            plan = row[0][0]["Plan"]
            assert list(_unbounded_scans(plan)) == [], (name, plan)
            # Index lookups cost under 50 here; reading all 20k runs costs several hundred.
            assert plan["Total Cost"] < 100, (name, plan)
        for name, (params, statements) in _HOT_FUNCTIONS.items():
            plans = _nested_plans(conn, QUERIES[name], params)
            assert len(plans) == statements, (name, plans)
            for plan in plans:
                assert list(_unbounded_scans(plan)) == [], (name, plan)
                assert plan["Total Cost"] < 100, (name, plan)


def _nested_plans(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The plans of the statements a function runs when `query` calls it (rolled back), as
    `auto_explain` reports them to the client."""
    reports: list[str] = []
    conn.add_notice_handler(lambda diag: reports.append(diag.message_primary or ""))
    conn.execute("BEGIN")
    # SET is not planned, so auto_explain reports nothing of its own before the query's.
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET LOCAL auto_explain.log_min_duration = 0")
    conn.execute("SET LOCAL auto_explain.log_nested_statements = on")
    conn.execute("SET LOCAL auto_explain.log_format = json")
    conn.execute("SET LOCAL client_min_messages = log")
    conn.execute(query, params).fetchall()
    conn.execute("ROLLBACK")
    plans = [json.loads(report.partition("plan:")[2])["Plan"] for report in reports if "plan:" in report]
    # The last report is the calling statement's own plan (a function scan, or a result for a
    # function called as a value).
    assert plans and plans[-1]["Node Type"] in ("Function Scan", "Result"), plans
    return plans[:-1]


# -- several processes on one database ------------------------------------------------------------


async def test_reject_admits_exactly_one_run_across_instances(stores: list[PostgresStore]) -> None:
    first, second = stores[0], stores[1]
    await first.create_thread(NewThread(thread_id="t"))

    async def attempt(i: int) -> Run | ThreadBusy:
        store = first if i % 2 else second
        try:
            return (await store.create_run(_new_run(f"r{i}", "t", multitask_strategy="reject"))).run
        except ThreadBusy as exc:
            return exc

    results = await asyncio.gather(*(attempt(i) for i in range(50)))
    admitted = [result for result in results if isinstance(result, Run)]
    assert len(admitted) == 1
    assert sum(isinstance(result, ThreadBusy) for result in results) == 49
    assert [r.run_id for r in await first.expired_runs()] == []
    listed = await second.list_runs("t", "", RunFilter())
    assert [r.run_id for r in listed] == [admitted[0].run_id]


async def test_concurrent_claimers_never_share_a_run_or_a_thread(
    stores: list[PostgresStore], clock: FakeClock
) -> None:
    expected: dict[str, list[str]] = collections.defaultdict(list)
    for i in range(200):
        thread_id = f"t{i // 4}"  # a thread's runs are adjacent in the queue: the hardest case
        await stores[i % 4].create_run(_new_run(f"r{i:03}", thread_id, if_not_exists="create"))
        expected[thread_id].append(f"r{i:03}")

    claimed: dict[str, list[str]] = collections.defaultdict(list)
    running: dict[str, str] = {}
    finished = 0
    changed = asyncio.Condition()

    def moved_on(seen: int) -> bool:
        return finished != seen or finished >= 200

    async def claimer(store: PostgresStore, worker_id: str) -> None:
        nonlocal finished
        while finished < 200:
            async with changed:
                version = finished
            run = await store.claim_run(worker_id, 30)
            if run is None:
                # Every other run is held by another claimer: wait until one of them finishes.
                async with changed:
                    await asyncio.wait_for(changed.wait_for(functools.partial(moved_on, version)), 30)
                continue
            assert run.thread_id not in running, f"{run.run_id} and {running[run.thread_id]} both running"
            running[run.thread_id] = run.run_id
            claimed[run.thread_id].append(run.run_id)
            await asyncio.sleep(0)  # let the others try this thread while the run is held
            assert await store.renew_lease(run.run_id, run.attempt, worker_id, 30) is None
            del running[run.thread_id]
            await store.finish_run(run.run_id, run.attempt, Outcome("success", "idle"))
            async with changed:
                finished += 1
                changed.notify_all()

    await asyncio.wait_for(
        asyncio.gather(*(claimer(store, f"w{n}") for n, store in enumerate(stores))), timeout=60
    )
    assert dict(claimed) == dict(expected)  # each run once, each thread in admission order
    assert await stores[0].claim_run("w", 30) is None
    assert {(await stores[0].get_thread(t, "")).status for t in expected} == {"idle"}


# -- durability -----------------------------------------------------------------------------------

_CREATE_THEN_HANG = textwrap.dedent(
    """
    import asyncio, sys
    from runplane.core.models import NewRun
    from runplane.stores import open_store

    async def main():
        store = open_store(sys.argv[1])
        await store.open()
        admission = await store.create_run(NewRun("r-durable", "t", "agent", if_not_exists="create"))
        print(admission.run.run_id, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_acknowledged_run_survives_kill_9(db_url: str, clock: FakeClock) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CREATE_THEN_HANG, db_url, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        ack = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert ack.decode().strip() == "r-durable"
    async with PostgresStore.from_url(db_url, clock=clock) as store:
        run = await store.get_run("r-durable", "")
        assert run.status == "pending"
        assert (await store.claim_run("w", 30)) == await store.get_run("r-durable", "")


async def test_recovery_waits_for_a_held_attempt_to_finish_its_write(
    stores: list[PostgresStore], db_url: str, clock: FakeClock
) -> None:
    """`hold_attempt` share-locks the run: recovering it (from another instance) blocks until the
    fenced write is done, so the next attempt starts from what that write left."""
    worker, recoverer = stores[0], stores[1]
    claimed = await _expired_claim(worker, clock)
    async with worker.hold_attempt("r1", claimed.attempt, 30):
        recovery = asyncio.create_task(recoverer.recover_run("r1", claimed.attempt, max_attempts=3))
        await _until_blocked_on_a_lock(db_url)
        assert not recovery.done()
    recovered = await recovery
    assert (recovered.status, recovered.attempt) == ("pending", claimed.attempt)
    with pytest.raises(LeaseLost):
        async with worker.hold_attempt("r1", claimed.attempt, 30):
            raise AssertionError("a recovered attempt entered the fence")


async def test_a_stalled_holder_loses_its_hold_and_recovery_goes_on(
    stores: list[PostgresStore], clock: FakeClock
) -> None:
    """A process stopped inside `hold_attempt` (SIGSTOP, a blocked event loop) must not block the
    run's recovery for ever: PostgreSQL ends its session after `max_seconds`, and when it wakes
    up its hold fails with LeaseLost."""
    worker, recoverer = stores[0], stores[1]
    claimed = await _expired_claim(worker, clock)
    woken = asyncio.Event()
    with pytest.raises(LeaseLost, match="lost its hold"):
        async with worker.hold_attempt("r1", claimed.attempt, max_seconds=0.2):
            recovered = await recoverer.recover_run("r1", claimed.attempt, max_attempts=3)
            assert (recovered.status, recovered.attempt) == ("pending", claimed.attempt)
            woken.set()
    assert woken.is_set()
    again = await recoverer.claim_run("w2", 30)
    assert again is not None and again.attempt == claimed.attempt + 1
    async with worker.hold_attempt("r1", again.attempt, 30):  # the pool replaced the ended session
        pass


async def _expired_claim(store: PostgresStore, clock: FakeClock) -> Run:
    """Run r1 on thread t1, claimed by worker w1 whose 30 s lease has then expired."""
    await store.create_thread(NewThread(thread_id="t1"))
    await store.create_run(_new_run("r1", "t1"))
    claimed = await store.claim_run("w1", 30)
    assert claimed is not None
    clock.advance(31)
    return claimed


async def _until_blocked_on_a_lock(db_url: str) -> None:
    """Wait until some session of the database waits for a row lock (pg_stat_activity says so)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as admin:
        for _ in range(500):
            cursor = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            row = await cursor.fetchone()
            if row is not None and row[0] > 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("no session ever waited for the lock")
