"""Thread TTLs: counted from the thread's last update, swept only when no run is active."""

from __future__ import annotations

import pytest

from runplane.core.errors import NotFound
from runplane.core.models import ThreadTtl
from runplane.core.store import Store, ThreadLifecycleStore
from runplane.testing import FakeClock
from tests.conformance._support import OTHER, OWNER, OpenAnother, add_run, claim, make_thread, outcome


def ttls(store: Store) -> ThreadLifecycleStore:
    assert isinstance(store, ThreadLifecycleStore)
    return store


async def expired_ids(store: Store) -> list[str]:
    return [thread.thread_id for thread in await ttls(store).expired_threads(100)]


async def test_ttl_runs_out_after_the_last_update(store: Store, clock: FakeClock) -> None:
    await make_thread(store, "t1")
    await make_thread(store, "t2")
    await make_thread(store, "forever")
    await ttls(store).set_thread_ttl("t1", OWNER, ThreadTtl(minutes=1))
    await ttls(store).set_thread_ttl("t2", OWNER, ThreadTtl(minutes=2))
    clock.advance(59)
    assert await expired_ids(store) == []
    clock.advance(1)
    assert await expired_ids(store) == ["t1"]
    await store.update_thread("t2", OWNER, {"touched": True})  # an update restarts the TTL
    clock.advance(119)
    assert await expired_ids(store) == ["t1"]
    clock.advance(1)
    assert await expired_ids(store) == ["t1", "t2"]  # oldest expiry first
    assert await ttls(store).delete_expired_thread("t1")
    with pytest.raises(NotFound):
        await store.get_thread("t1", OWNER)
    assert await expired_ids(store) == ["t2"]
    assert not await ttls(store).delete_expired_thread("forever")
    assert not await ttls(store).delete_expired_thread("t1")


async def test_an_active_run_keeps_its_thread(store: Store, clock: FakeClock) -> None:
    """A thread whose TTL ran out while a run waits or runs on it stays: the store checks for
    active runs in the deleting transaction, so a sweeper that read the thread as expired just
    before a run was admitted deletes nothing."""
    await make_thread(store, "t1")
    await ttls(store).set_thread_ttl("t1", OWNER, ThreadTtl(minutes=1))
    await add_run(store, "r1", "t1")
    clock.advance(61)
    assert await expired_ids(store) == []
    assert not await ttls(store).delete_expired_thread("t1")
    run = await claim(store)
    clock.advance(61)
    assert await expired_ids(store) == []
    assert not await ttls(store).delete_expired_thread("t1")
    await store.finish_run(run.run_id, run.attempt, outcome())
    clock.advance(61)  # finishing the run updated the thread: the TTL counts from then
    assert await expired_ids(store) == ["t1"]
    assert await ttls(store).delete_expired_thread("t1")
    with pytest.raises(NotFound):
        await store.get_run("r1", OWNER)  # its runs went with it


async def test_clearing_owner_and_deletion(store: Store, clock: FakeClock, open_another: OpenAnother) -> None:
    await make_thread(store, "t1")
    with pytest.raises(NotFound):
        await ttls(store).set_thread_ttl("t1", OTHER, ThreadTtl(minutes=1))
    await ttls(store).set_thread_ttl("t1", OWNER, ThreadTtl(minutes=1))
    await ttls(store).set_thread_ttl("t1", OWNER, None)
    clock.advance(3600)
    assert await expired_ids(store) == []
    await make_thread(store, "t2")
    await ttls(store).set_thread_ttl("t2", OWNER, ThreadTtl(minutes=0))
    other = await open_another()
    assert await expired_ids(other) == ["t2"]  # durable: another instance sees it
    await store.delete_thread("t2", OWNER)
    assert await expired_ids(store) == []
