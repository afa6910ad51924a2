"""Issue 18: on PostgreSQL a run is picked up by its wake-up, never left to the fallback poll.

The API used to patch the thread's metadata (which graph ran) right after admitting a thread's first
run and waking the workers. That second lock of the thread row made the worker's claim
(`FOR UPDATE OF t SKIP LOCKED`) pass the run over, and no second wake-up came: about one run in ten
on a new thread waited for the worker's fallback poll (1 s). Now the admission writes that metadata
itself, and a claim that finds nothing right after a wake-up looks again shortly. The workers here
poll once an hour, so a run passed over would never start within the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from runplane.api import ApiSettings, create_app
from runplane.core.manager import RunManager
from runplane.core.models import Admission, Claimed, NewRun
from runplane.demo.graphs import echo
from runplane.events.postgres import PostgresBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.postgres.store import PostgresStore
from runplane.worker import Worker
from tests._services import postgres_database
from tests.api._support import serve

RUNS = 40
#: Far beyond anything the tests wait: a run the wake-up missed is not rescued by the poll.
NO_POLL = 3600.0
#: Liveness bound, not a latency figure: every run here takes milliseconds; a missed one an hour.
STALLED_AFTER = 60.0


class LockedAfterAdmission(PostgresStore):
    """The real store, plus what the API used to do: lock the new run's thread in another
    transaction right after the admission, until a claim has passed the run over."""

    held: psycopg.AsyncConnection[object] | None = None
    passed_over = 0

    async def create_run(self, new: NewRun) -> Admission:
        admission = await super().create_run(new)
        self.held = await psycopg.AsyncConnection.connect(self.checkpointer_url)
        await self.held.execute("SELECT 1 FROM threads WHERE thread_id = %s FOR UPDATE", (new.thread_id,))
        return admission  # the manager wakes the workers now, with the thread still locked

    async def claim_and_look(self, worker_id: str, lease_seconds: float) -> Claimed:
        claimed = await super().claim_and_look(worker_id, lease_seconds)
        if self.held is not None:
            # The lock ends without a wake-up, as the metadata patch did.
            held, self.held = self.held, None
            self.passed_over += claimed.run is None
            await held.commit()
            await held.close()
        return claimed


@pytest.fixture
def db_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


async def _serve(
    store: PostgresStore, url: str, *, claims_only: bool = False
) -> AsyncIterator[tuple[LangGraphClient, Worker]]:
    """An API and a worker on `store`. `claims_only`: the worker gets its runs by claiming them, as
    from another process's API; else the admissions take runs for it (`RunManager.take_runs_here`)."""
    bus = PostgresBus.from_url(url)
    try:
        await store.open()
        manager = RunManager(store, bus)
        runtime = LangGraphRuntime({"echo": echo}, InMemorySaver())
        worker = Worker(manager, runtime, concurrency=8, shutdown_grace=0.5, poll_interval=NO_POLL)
        await worker.start()
        if claims_only:
            manager.take_runs_here(None)
        try:
            async with serve(create_app(manager, runtime, ApiSettings())) as base:
                client = get_client(url=base, api_key=None)
                try:
                    yield client, worker
                finally:
                    await client.aclose()
        finally:
            await worker.stop()
    finally:
        await bus.close()
        await store.close()


async def _run_on_new_threads(client: LangGraphClient, runs: int) -> None:
    async with asyncio.timeout(STALLED_AFTER):
        for i in range(runs):
            thread = await client.threads.create()
            run = await client.runs.create(thread["thread_id"], "echo", input={"messages": f"hi {i}"})
            await client.runs.join(thread["thread_id"], run["run_id"])
            assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
            # What the API used to patch afterwards is written by the admission itself.
            metadata = (await client.threads.get(thread["thread_id"]))["metadata"] or {}
            assert metadata["graph_id"] == "echo"
            assert metadata["assistant_id"] == run["assistant_id"]


@pytest.mark.parametrize("claims_only", [False, True])
async def test_runs_on_new_threads_start_on_their_wake_up(db_url: str, claims_only: bool) -> None:
    async for client, worker in _serve(PostgresStore.from_url(db_url), db_url, claims_only=claims_only):
        await _run_on_new_threads(client, RUNS)
        assert worker.claimed == RUNS
        assert worker.polled == 0


async def test_a_run_passed_over_by_its_claim_still_starts_without_the_poll(db_url: str) -> None:
    store = LockedAfterAdmission.from_url(db_url)
    assert isinstance(store, LockedAfterAdmission)
    async for client, worker in _serve(store, db_url, claims_only=True):
        await _run_on_new_threads(client, 5)
        assert store.passed_over > 0  # a claim really skipped a run's locked thread
        assert worker.claimed == 5
        assert worker.polled == 0
