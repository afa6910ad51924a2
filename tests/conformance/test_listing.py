"""Listing runs, searching and counting threads: filters, order, pages."""

from __future__ import annotations

from typing import Literal

import pytest

from runplane.core.errors import NotFound
from runplane.core.models import RunFilter, ThreadFilter
from runplane.core.store import Store
from runplane.testing import FakeClock
from tests.conformance._support import OTHER, OWNER, add_run, claim, make_thread, outcome

SortKey = Literal["thread_id", "status", "created_at", "updated_at"]


async def _ids(store: Store, filter: ThreadFilter, owner: str = OWNER) -> list[str]:
    return [thread.thread_id for thread in await store.search_threads(owner, filter)]


# -- list_runs --------------------------------------------------------------------------------------


async def test_list_runs_is_newest_first_by_admission_even_at_equal_times(store: Store) -> None:
    for run_id in ("r-c", "r-a", "r-b"):  # same instant: only the admission order separates them
        await add_run(store, run_id, "t1")
    runs = await store.list_runs("t1", OWNER, RunFilter())
    assert [run.run_id for run in runs] == ["r-b", "r-a", "r-c"]
    assert runs[0] == await store.get_run("r-b", OWNER)


async def test_list_runs_pages_and_filters_by_status(store: Store, clock: FakeClock) -> None:
    for i in range(6):
        await add_run(store, f"r{i}", "t1")
        clock.advance(1)
    first = await claim(store)
    await store.finish_run(first.run_id, first.attempt, outcome())
    await claim(store)  # r1 running; r2..r5 pending

    def ids(runs: list) -> list[str]:  # type: ignore[type-arg]
        return [run.run_id for run in runs]

    assert ids(await store.list_runs("t1", OWNER, RunFilter(limit=2))) == ["r5", "r4"]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(limit=2, offset=2))) == ["r3", "r2"]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(limit=10, offset=5))) == ["r0"]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(limit=10, offset=6))) == []
    assert ids(await store.list_runs("t1", OWNER, RunFilter(limit=0))) == []
    assert ids(await store.list_runs("t1", OWNER, RunFilter(status="pending", limit=10))) == [
        "r5",
        "r4",
        "r3",
        "r2",
    ]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(status="pending", limit=2, offset=1))) == [
        "r4",
        "r3",
    ]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(status="running"))) == ["r1"]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(status="success"))) == ["r0"]
    assert ids(await store.list_runs("t1", OWNER, RunFilter(status="error"))) == []


async def test_list_runs_of_a_thread_only(store: Store) -> None:
    await add_run(store, "a1", "ta")
    await add_run(store, "b1", "tb")
    await add_run(store, "a2", "ta")
    assert [run.run_id for run in await store.list_runs("ta", OWNER, RunFilter())] == ["a2", "a1"]
    await make_thread(store, "empty")
    assert await store.list_runs("empty", OWNER, RunFilter()) == []


async def test_list_runs_of_unknown_thread_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.list_runs("nope", OWNER, RunFilter())


# -- search / count ---------------------------------------------------------------------------------


async def _three_threads(store: Store, clock: FakeClock) -> None:
    """t-1 (oldest, idle), t-2 (busy), t-3 (newest, error), with distinct times."""
    await make_thread(store, "t-1", metadata={"team": "a", "env": "prod"})
    clock.advance(1)
    await make_thread(store, "t-2", metadata={"team": "b"})
    clock.advance(1)
    await make_thread(store, "t-3", metadata={"team": "a"})
    clock.advance(1)
    await add_run(store, "r2", "t-2")  # t-2 busy, updated now
    clock.advance(1)
    await store.set_thread_state("t-3", OWNER, None, {}, "error")  # t-3 updated last
    clock.advance(1)
    await store.update_thread("t-1", OWNER, {"x": 1})  # t-1 updated last of all


async def test_search_defaults_to_newest_created_first(store: Store, clock: FakeClock) -> None:
    await _three_threads(store, clock)
    threads = await store.search_threads(OWNER, ThreadFilter())
    assert [t.thread_id for t in threads] == ["t-3", "t-2", "t-1"]
    assert threads[0] == await store.get_thread("t-3", OWNER)


@pytest.mark.parametrize(
    ("sort_by", "ascending"),
    [
        ("thread_id", ["t-1", "t-2", "t-3"]),
        ("created_at", ["t-1", "t-2", "t-3"]),
        ("updated_at", ["t-2", "t-3", "t-1"]),
        ("status", ["t-2", "t-3", "t-1"]),  # busy < error < idle
    ],
)
async def test_search_sorts(store: Store, clock: FakeClock, sort_by: SortKey, ascending: list[str]) -> None:
    await _three_threads(store, clock)
    assert await _ids(store, ThreadFilter(sort_by=sort_by, sort_order="asc")) == ascending
    assert await _ids(store, ThreadFilter(sort_by=sort_by, sort_order="desc")) == ascending[::-1]


async def test_search_breaks_ties_by_thread_id(store: Store) -> None:
    for thread_id in ("t-b", "t-c", "t-a"):  # same created_at, same status
        await make_thread(store, thread_id)
    assert await _ids(store, ThreadFilter(sort_order="desc")) == ["t-c", "t-b", "t-a"]
    assert await _ids(store, ThreadFilter(sort_order="asc")) == ["t-a", "t-b", "t-c"]
    assert await _ids(store, ThreadFilter(sort_by="status", sort_order="asc")) == ["t-a", "t-b", "t-c"]
    assert await _ids(store, ThreadFilter(sort_by="status", sort_order="desc")) == ["t-c", "t-b", "t-a"]


async def test_search_sorts_ids_by_code_point(store: Store) -> None:
    # InMemoryStore compares Python strings: upper case before lower case, "-" before digits.
    for thread_id in ("b1", "T1", "a-1", "a1", "A1"):
        await make_thread(store, thread_id)
    assert await _ids(store, ThreadFilter(sort_by="thread_id", sort_order="asc")) == [
        "A1",
        "T1",
        "a-1",
        "a1",
        "b1",
    ]


async def test_search_pages(store: Store) -> None:
    for i in range(7):
        await make_thread(store, f"t-{i}")
    page = ThreadFilter(sort_by="thread_id", sort_order="asc", limit=3)
    assert await _ids(store, page) == ["t-0", "t-1", "t-2"]
    assert await _ids(store, ThreadFilter(sort_by="thread_id", sort_order="asc", limit=3, offset=3)) == [
        "t-3",
        "t-4",
        "t-5",
    ]
    assert await _ids(store, ThreadFilter(sort_by="thread_id", sort_order="asc", limit=3, offset=6)) == [
        "t-6"
    ]
    assert await _ids(store, ThreadFilter(limit=3, offset=7)) == []
    assert await _ids(store, ThreadFilter(limit=0)) == []


async def test_search_filters_by_status_ids_and_metadata(store: Store, clock: FakeClock) -> None:
    await _three_threads(store, clock)
    assert await _ids(store, ThreadFilter(status="busy")) == ["t-2"]
    assert await _ids(store, ThreadFilter(status="error")) == ["t-3"]
    assert await _ids(store, ThreadFilter(status="interrupted")) == []
    assert await _ids(store, ThreadFilter(ids=("t-1", "t-3", "unknown"))) == ["t-3", "t-1"]
    assert await _ids(store, ThreadFilter(ids=())) == []
    assert await _ids(store, ThreadFilter(metadata={"team": "a"})) == ["t-3", "t-1"]
    assert await _ids(store, ThreadFilter(metadata={"team": "a", "env": "prod"})) == ["t-1"]
    assert await _ids(store, ThreadFilter(metadata={"team": "c"})) == []
    assert await _ids(store, ThreadFilter(metadata={"missing": None})) == []
    assert await _ids(store, ThreadFilter(metadata={"team": "a"}, status="error", ids=("t-3",))) == ["t-3"]
    assert await _ids(store, ThreadFilter(metadata={"team": "a"}, ids=("t-2",))) == []


async def test_search_metadata_matches_null_and_typed_values(store: Store) -> None:
    await make_thread(store, "t-null", metadata={"k": None})
    await make_thread(store, "t-str", metadata={"k": "1"})
    await make_thread(store, "t-int", metadata={"k": 1})
    await make_thread(store, "t-none")
    asc = {"sort_by": "thread_id", "sort_order": "asc"}
    assert await _ids(store, ThreadFilter(metadata={"k": None}, **asc)) == ["t-null"]  # type: ignore[arg-type]
    assert await _ids(store, ThreadFilter(metadata={"k": "1"}, **asc)) == ["t-str"]  # type: ignore[arg-type]
    assert await _ids(store, ThreadFilter(metadata={"k": 1}, **asc)) == ["t-int"]  # type: ignore[arg-type]


async def test_search_metadata_compares_nested_values_whole(store: Store) -> None:
    # The reference is a top-level subset match: a nested value must be equal, not merely contain.
    await make_thread(store, "t1", metadata={"cfg": {"a": 1, "b": 2}, "tags": ["x", "y"]})
    assert await _ids(store, ThreadFilter(metadata={"cfg": {"a": 1, "b": 2}})) == ["t1"]
    assert await _ids(store, ThreadFilter(metadata={"tags": ["x", "y"]})) == ["t1"]
    assert await _ids(store, ThreadFilter(metadata={"cfg": {"a": 1}})) == []
    assert await _ids(store, ThreadFilter(metadata={"tags": ["x"]})) == []


async def test_count_threads_applies_filters_but_not_pages(store: Store, clock: FakeClock) -> None:
    await _three_threads(store, clock)
    assert await store.count_threads(OWNER, ThreadFilter(limit=1, offset=2)) == 3
    assert await store.count_threads(OWNER, ThreadFilter(metadata={"team": "a"})) == 2
    assert await store.count_threads(OWNER, ThreadFilter(status="busy")) == 1
    assert await store.count_threads(OWNER, ThreadFilter(ids=("t-1", "t-2", "nope"))) == 2
    assert await store.count_threads(OWNER, ThreadFilter(ids=())) == 0
    assert await store.count_threads(OTHER, ThreadFilter()) == 0


async def test_search_follows_status_changes(store: Store) -> None:
    await add_run(store, "r1", "t1")
    assert await _ids(store, ThreadFilter(status="busy")) == ["t1"]
    run = await claim(store)
    await store.finish_run("r1", run.attempt, outcome("error", "error", error="boom"))
    assert await _ids(store, ThreadFilter(status="busy")) == []
    assert await _ids(store, ThreadFilter(status="error")) == ["t1"]
    assert await store.count_threads(OWNER, ThreadFilter(status="error")) == 1
