"""Idempotency keys: a replay returns the first run; another payload under the key conflicts."""

from __future__ import annotations

import pytest

from runplane.core.errors import Conflict, NotFound
from runplane.core.models import RunFilter
from runplane.core.store import Store
from tests.conformance._support import OTHER, OWNER, add_run, claim, new_run, outcome


async def test_replay_returns_the_first_run(store: Store) -> None:
    first = await store.create_run(new_run("r1", "t1", idempotency_key="k", fingerprint="f"))
    assert first.run.idempotency_key == "k"
    replay = await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="f"))
    assert replay.replayed is True
    assert replay.run == first.run
    assert (replay.cancel_requested, replay.cancelled_pending) == ((), ())
    with pytest.raises(NotFound):
        await store.get_run("r2", OWNER)
    assert len(await store.list_runs("t1", OWNER, RunFilter())) == 1


async def test_replay_returns_the_run_as_it_is_now(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    run = await claim(store)
    finished = await store.finish_run("r1", run.attempt, outcome())
    replay = await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="f"))
    assert replay.replayed
    assert replay.run == finished


async def test_replay_wins_over_admission_rules(store: Store) -> None:
    """A replay on a busy thread with `reject`, a foreign thread id or an existing run id still
    answers the first run: the key is looked up before anything else."""
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    replay = await store.create_run(
        new_run("r1", "other-thread", strategy="reject", idempotency_key="k", fingerprint="f")
    )
    assert replay.replayed
    assert replay.run.run_id == "r1"
    with pytest.raises(NotFound):
        await store.get_thread("other-thread", OWNER)
    replay = await store.create_run(
        new_run(
            "r9", "t1", strategy="interrupt", if_not_exists="reject", idempotency_key="k", fingerprint="f"
        )
    )
    assert replay.replayed
    assert (await store.get_run("r1", OWNER)).cancel_action is None


async def test_same_key_with_another_payload_conflicts(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    with pytest.raises(Conflict):
        await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="g"))
    with pytest.raises(Conflict):
        await store.create_run(new_run("r3", "t1", idempotency_key="k", fingerprint=None))
    assert [run.run_id for run in await store.list_runs("t1", OWNER, RunFilter())] == ["r1"]


async def test_missing_fingerprints_match_each_other(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k")
    replay = await store.create_run(new_run("r2", "t1", idempotency_key="k"))
    assert replay.replayed
    assert replay.run.run_id == "r1"


async def test_keys_are_scoped_by_owner(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    other = await store.create_run(new_run("r2", "t2", owner=OTHER, idempotency_key="k", fingerprint="g"))
    assert not other.replayed
    assert other.run.run_id == "r2"
    assert other.run.owner == OTHER


async def test_runs_without_a_key_never_replay(store: Store) -> None:
    await add_run(store, "r1", "t1")
    admission = await store.create_run(new_run("r2", "t1"))
    assert not admission.replayed
    assert admission.run.run_id == "r2"


async def test_deleting_the_run_frees_its_key(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    await store.delete_run("r1", OWNER)
    admission = await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="g"))
    assert not admission.replayed
    assert admission.run.run_id == "r2"


async def test_rollback_of_a_pending_run_frees_its_key(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    result = await store.request_cancel("r1", OWNER, "rollback")
    assert result.deleted
    admission = await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="f"))
    assert not admission.replayed
    assert admission.run.run_id == "r2"


async def test_deleting_the_thread_frees_its_keys(store: Store) -> None:
    await add_run(store, "r1", "t1", idempotency_key="k", fingerprint="f")
    await store.delete_thread("t1", OWNER)
    admission = await store.create_run(new_run("r2", "t1", idempotency_key="k", fingerprint="f"))
    assert not admission.replayed
