"""`RunManager` use-cases racing another process over the memory store (an assistant's run rolled
back while the assistant is deleted, a run admitted while its thread is swept), the worker's
cancel hints and checkpoint fence, and a few inputs the other unit tests leave aside."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from runplane.core.errors import LeaseLost, NotFound
from runplane.core.graphs import Assistant, default_assistant_id
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import Outcome, Run, Thread, ThreadTtl
from runplane.core.run_kwargs import RunKwargs
from runplane.core.stream_modes import StreamModes
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.testing import FakeClock

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = ManagerSettings(lease_seconds=30, max_attempts=2, wait_fallback_seconds=3600)


class InterleavingStore(InMemoryStore):
    """Runs `meanwhile` (once) right after the next `delete_assistant` or `expired_threads`
    answered: what another process did between that read and the manager's next step."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.meanwhile: Callable[[], Awaitable[object]] | None = None

    async def _interleave(self) -> None:
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()

    async def delete_assistant(self, assistant_id: str, owner: str) -> list[Run]:
        active = await super().delete_assistant(assistant_id, owner)
        await self._interleave()
        return active

    async def expired_threads(self, limit: int) -> list[Thread]:
        expired = await super().expired_threads(limit)
        await self._interleave()
        return expired


def _graph(graph_id: str) -> Assistant:
    return Assistant(
        assistant_id=graph_id, graph_id=graph_id, name=graph_id, created_at=EPOCH, updated_at=EPOCH
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> InterleavingStore:
    return InterleavingStore(clock)


@pytest.fixture
async def manager(store: InterleavingStore, clock: FakeClock) -> RunManager:
    manager = RunManager(store, InMemoryBus(), clock=clock, settings=SETTINGS)
    await manager.register_graphs([_graph("agent")])
    return manager


async def test_deleting_an_assistant_whose_run_was_rolled_back_meanwhile(
    manager: RunManager, store: InterleavingStore
) -> None:
    assistant = await manager.create_assistant("agent")
    gone = await manager.create_run("t1", assistant.assistant_id, if_not_exists="create")
    kept = await manager.create_run("t2", assistant.assistant_id, if_not_exists="create")
    store.meanwhile = lambda: manager.cancel_run(gone.run_id, action="rollback")
    cancelled = await manager.delete_assistant(assistant.assistant_id)
    assert {run.run_id for run in cancelled} == {gone.run_id, kept.run_id}
    with pytest.raises(NotFound):
        await manager.get_run(gone.run_id)
    assert (await manager.get_run(kept.run_id)).status == "interrupted"  # the rest still cancelled
    with pytest.raises(NotFound):
        await manager.get_assistant(assistant.assistant_id)


async def test_a_thread_that_got_a_run_while_being_swept_is_kept(
    manager: RunManager, store: InterleavingStore, clock: FakeClock
) -> None:
    thread = await manager.create_thread()
    await manager.set_thread_ttl(thread.thread_id, ThreadTtl(minutes=1))
    clock.advance(120)
    store.meanwhile = lambda: manager.create_run(thread.thread_id, "agent")
    assert await manager.sweep_expired_threads() == []
    assert (await manager.get_thread(thread.thread_id)).status == "busy"


async def test_a_graph_named_like_a_uuid_is_reached_by_its_assistant_id_only(manager: RunManager) -> None:
    name = str(uuid.uuid4())
    await manager.register_graphs([_graph(name)])
    with pytest.raises(NotFound):  # a uuid is an assistant id, never a graph's name
        await manager.get_assistant(name)
    assert (await manager.get_assistant(default_assistant_id(name))).graph_id == name
    assert (await manager.get_assistant("agent")).assistant_id == default_assistant_id("agent")


async def test_a_worker_hears_the_cancel_of_its_run(manager: RunManager) -> None:
    await manager.create_run("t1", "agent", if_not_exists="create")
    run = await manager.claim("w1")
    assert run is not None
    async with manager.cancel_hints("w1") as hints:
        requested = await manager.cancel_run(run.run_id, action="rollback")
        assert requested is not None and requested.status == "running"  # until the worker stops it
        async with asyncio.timeout(5):
            assert await anext(hints) == run.run_id


async def test_a_checkpoint_write_is_fenced_to_the_attempt_holding_the_run(
    manager: RunManager, clock: FakeClock
) -> None:
    await manager.create_run("t1", "agent", if_not_exists="create")
    first = await manager.claim("w1")
    assert first is not None
    async with manager.hold(first):
        pass  # the attempt holds the run: its write may go ahead
    clock.advance(31)  # its lease ran out: the run is recovered and claimed again
    await manager.recover_expired()
    second = await manager.claim("w2")
    assert second is not None and second.run_id == first.run_id and second.attempt == first.attempt + 1
    with pytest.raises(LeaseLost):
        async with manager.hold(first):
            pytest.fail("a stale attempt must not write a checkpoint")
    async with manager.hold(second):
        pass
    await manager.finish(second, Outcome("success", "idle"))
    with pytest.raises(LeaseLost):  # nor once the run ended
        async with manager.hold(second):
            pytest.fail("an ended run takes no checkpoint")


def test_parsed_stream_modes_are_taken_as_they_are() -> None:
    modes = StreamModes.parse(["updates", "values", "updates"])
    assert RunKwargs.parse({"stream_mode": modes}).stream_mode == modes
    assert RunKwargs.from_json({"stream_mode": modes}).stream_mode.names == ("updates", "values")
