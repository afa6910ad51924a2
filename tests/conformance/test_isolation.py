"""Owner isolation: another owner's ids behave exactly like unknown ids (NotFound, never Forbidden)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runplane.core.errors import Conflict, NotFound
from runplane.core.models import NewThread, RunFilter, ThreadFilter
from runplane.core.store import Store
from tests.conformance._support import OTHER, OWNER, add_run, claim, new_run, outcome, usage

Op = Callable[[Store], Awaitable[Any]]

#: Every caller-facing method, aimed by OTHER at OWNER's thread `t1` and its runs.
FOREIGN_OPS: dict[str, Op] = {
    "get_thread": lambda s: s.get_thread("t1", OTHER),
    "update_thread": lambda s: s.update_thread("t1", OTHER, {"owned": "no"}),
    "set_thread_state": lambda s: s.set_thread_state("t1", OTHER, {"v": 0}, {}, "error"),
    "delete_thread": lambda s: s.delete_thread("t1", OTHER),
    "thread_usage": lambda s: s.thread_usage("t1", OTHER),
    "list_runs": lambda s: s.list_runs("t1", OTHER, RunFilter()),
    "get_run": lambda s: s.get_run("done", OTHER),
    "get_run_on_thread": lambda s: s.get_run("done", OTHER, "t1"),
    "get_running_run": lambda s: s.get_run("running", OTHER),
    "cancel_running_interrupt": lambda s: s.request_cancel("running", OTHER, "interrupt"),
    "cancel_pending_rollback": lambda s: s.request_cancel("pending", OTHER, "rollback"),
    "cancel_finished": lambda s: s.request_cancel("done", OTHER, "interrupt", "t1"),
    "delete_finished_run": lambda s: s.delete_run("done", OTHER),
    "delete_pending_run": lambda s: s.delete_run("pending", OTHER, "t1"),
    "delete_running_run": lambda s: s.delete_run("running", OTHER),
    "create_run_create": lambda s: s.create_run(new_run("theirs", "t1", owner=OTHER, if_not_exists="create")),
    "create_run_reject": lambda s: s.create_run(new_run("theirs", "t1", owner=OTHER, if_not_exists="reject")),
    "create_run_interrupt": lambda s: s.create_run(
        new_run("theirs", "t1", owner=OTHER, strategy="interrupt")
    ),
}


async def _owners_world(store: Store) -> None:
    """OWNER's thread t1 with a finished run, a running run and a pending one."""
    await store.create_thread(NewThread(owner=OWNER, thread_id="t1", metadata={"shared": "yes"}))
    await add_run(store, "done", "t1")
    done = await claim(store)
    await store.record_progress("done", done.attempt, usage=usage(1, 1))
    await store.finish_run("done", done.attempt, outcome(thread_values={"v": 1}))
    await add_run(store, "running", "t1")
    await claim(store)
    await add_run(store, "pending", "t1")


async def _snapshot(store: Store) -> tuple[Any, ...]:
    return (
        await store.get_thread("t1", OWNER),
        await store.list_runs("t1", OWNER, RunFilter(limit=100)),
        await store.thread_usage("t1", OWNER),
    )


@pytest.mark.parametrize("op_name", sorted(FOREIGN_OPS))
async def test_foreign_ids_are_not_found(store: Store, op_name: str) -> None:
    await _owners_world(store)
    before = await _snapshot(store)
    with pytest.raises(NotFound):
        await FOREIGN_OPS[op_name](store)
    assert await _snapshot(store) == before
    with pytest.raises(NotFound):
        await store.get_run("theirs", OTHER)


async def test_creating_a_thread_with_a_foreign_id_conflicts_without_revealing_it(store: Store) -> None:
    await _owners_world(store)
    before = await _snapshot(store)
    with pytest.raises(Conflict) as raised:
        await store.create_thread(NewThread(owner=OTHER, thread_id="t1"))
    assert "shared" not in str(raised.value)
    assert await _snapshot(store) == before


async def test_search_and_count_never_show_foreign_threads(store: Store) -> None:
    await _owners_world(store)
    await store.create_thread(NewThread(owner=OTHER, thread_id="t2", metadata={"shared": "yes"}))
    for filter in (
        ThreadFilter(),
        ThreadFilter(ids=("t1", "t2")),
        ThreadFilter(metadata={"shared": "yes"}),
        ThreadFilter(status="busy"),
        ThreadFilter(sort_by="thread_id", sort_order="asc", limit=1000),
    ):
        other_ids = [t.thread_id for t in await store.search_threads(OTHER, filter)]
        owner_ids = [t.thread_id for t in await store.search_threads(OWNER, filter)]
        assert "t1" not in other_ids
        assert "t2" not in owner_ids
        assert await store.count_threads(OTHER, filter) == len(other_ids)
        assert await store.count_threads(OWNER, filter) == len(owner_ids)
    assert [t.thread_id for t in await store.search_threads(OTHER, ThreadFilter())] == ["t2"]
    assert await store.count_threads(OWNER, ThreadFilter(ids=("t1", "t2"))) == 1


async def test_owners_share_run_ids_namespace_but_not_records(store: Store) -> None:
    await _owners_world(store)
    await add_run(store, "theirs", "t2", owner=OTHER)
    with pytest.raises(NotFound):
        await store.get_run("theirs", OWNER)
    assert [run.run_id for run in await store.list_runs("t2", OTHER, RunFilter())] == ["theirs"]
    # Worker methods are owner-blind: OTHER's run waits behind nothing of OWNER's.
    claimed = await claim(store)
    assert claimed.run_id == "theirs"
    assert claimed.owner == OTHER
