"""Runs are built from this process's copy of their assistant (no read of it per run), and a copy
another process made stale never shows: the admission refuses the run (`AssistantChanged`) and the
API builds it again from a fresh read. Two managers over one store stand for two processes on one
database; each keeps its own copies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.models import AssistantPatch
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.memory import InMemoryStore
from tests.api.conftest import BASE_URL

pytestmark = pytest.mark.usefixtures("worker")


class CountedStore(InMemoryStore):
    """The in-memory store, counting the reads of an assistant."""

    def __init__(self) -> None:
        super().__init__()
        self.assistant_reads = 0

    async def get_assistant(self, assistant_id: str, owner: str) -> Any:
        self.assistant_reads += 1
        return await super().get_assistant(assistant_id, owner)


@pytest.fixture
def shared() -> CountedStore:
    return CountedStore()


@pytest.fixture
def manager(shared: CountedStore) -> RunManager:
    return RunManager(shared, InMemoryBus(), settings=ManagerSettings(wait_fallback_seconds=0.2))


@pytest.fixture
def elsewhere(shared: CountedStore) -> RunManager:
    """Another process's manager on the same database."""
    return RunManager(shared, InMemoryBus())


@pytest.fixture
async def client(
    manager: RunManager, runtime: LangGraphRuntime, settings: ApiSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(manager, runtime, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        yield client


async def new_assistant(client: httpx.AsyncClient) -> str:
    created = await client.post("/assistants", json={"graph_id": "echo", "config": {"tags": ["v1"]}})
    assert created.status_code == 200, created.text
    return str(created.json()["assistant_id"])


async def run_on_new_thread(client: httpx.AsyncClient, assistant_id: str) -> dict[str, Any]:
    thread_id = (await client.post("/threads", json={})).json()["thread_id"]
    body = {"assistant_id": assistant_id, "input": {}}
    made = await client.post(f"/threads/{thread_id}/runs/wait", json=body)
    assert made.status_code == 200, made.text
    runs = (await client.get(f"/threads/{thread_id}/runs")).json()
    assert len(runs) == 1 and runs[0]["status"] == "success"
    return dict(runs[0])


async def test_runs_after_the_first_read_no_assistant(
    client: httpx.AsyncClient, shared: CountedStore
) -> None:
    assistant_id = await new_assistant(client)
    await run_on_new_thread(client, assistant_id)
    reads = shared.assistant_reads
    for _ in range(3):
        run = await run_on_new_thread(client, assistant_id)
        assert run["kwargs"]["assistant_version"] == 1
    assert shared.assistant_reads == reads
    # A GET still reads the store: another process may have changed the assistant.
    await client.get(f"/assistants/{assistant_id}")
    assert shared.assistant_reads == reads + 1


async def test_a_patch_by_another_process_shows_in_the_next_run(
    client: httpx.AsyncClient, elsewhere: RunManager
) -> None:
    assistant_id = await new_assistant(client)
    first = await run_on_new_thread(client, assistant_id)
    assert first["kwargs"]["config"]["tags"] == ["v1"]
    await elsewhere.update_assistant(assistant_id, AssistantPatch(config={"tags": ["v2"]}))
    later = await run_on_new_thread(client, assistant_id)
    assert later["kwargs"]["assistant_version"] == 2
    assert later["kwargs"]["config"]["tags"] == ["v2"]


async def test_a_deletion_by_another_process_refuses_the_next_run(
    client: httpx.AsyncClient, elsewhere: RunManager
) -> None:
    assistant_id = await new_assistant(client)
    await run_on_new_thread(client, assistant_id)
    await elsewhere.delete_assistant(assistant_id)
    thread_id = (await client.post("/threads", json={})).json()["thread_id"]
    body = {"assistant_id": assistant_id, "input": {}}
    refused = await client.post(f"/threads/{thread_id}/runs", json=body)
    assert refused.status_code == 404, refused.text
    assert (await client.get(f"/threads/{thread_id}/runs")).json() == []
    # Stateless too: its temporary thread is not left behind.
    before = (await client.post("/threads/search", json={})).json()
    refused = await client.post("/runs", json=body)
    assert refused.status_code == 404, refused.text
    assert (await client.post("/threads/search", json={})).json() == before


async def test_a_patch_through_this_process_is_used_at_once(
    client: httpx.AsyncClient, shared: CountedStore
) -> None:
    assistant_id = await new_assistant(client)
    await run_on_new_thread(client, assistant_id)
    patched = await client.patch(f"/assistants/{assistant_id}", json={"config": {"tags": ["v2"]}})
    assert patched.status_code == 200, patched.text
    later = await run_on_new_thread(client, assistant_id)
    assert later["kwargs"]["config"]["tags"] == ["v2"]
