"""API tests run in-process: the app over an in-memory manager, the real `LangGraphRuntime` (the
test graphs of `tests.api.graphs` on LangGraph's in-memory saver) and the real `Worker`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from starlette.applications import Starlette

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.graphs import LangGraphRuntime
from runplane.runtime.items import LangGraphItems
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api.graphs import Gates, api_graphs

BASE_URL = "http://runplane.test"


def api_runtime(gates: Gates | None = None, store: InMemoryStore | None = None) -> LangGraphRuntime:
    """The test graphs over a fresh in-memory saver (and `store` as the graphs' long-term store)."""
    return LangGraphRuntime(api_graphs(gates or Gates()), InMemorySaver(), store=store)


def api_worker(manager: RunManager, runtime: LangGraphRuntime) -> Worker:
    """The real worker; a test's gated runs still waiting at its end are handed back at once."""
    return Worker(manager, runtime, concurrency=8, shutdown_grace=0.0)


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(max_body_bytes=64 * 1024, heartbeat_seconds=0.05)


@pytest.fixture
def items() -> InMemoryStore:
    """The long-term store the graphs get, and the API's `/store` over the real adapter."""
    return InMemoryStore()


@pytest.fixture
def manager(items: InMemoryStore) -> RunManager:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))
    manager.attach_items(LangGraphItems(items))
    return manager


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
def runtime(gates: Gates, items: InMemoryStore) -> LangGraphRuntime:
    return api_runtime(gates, items)


@pytest.fixture
async def worker(manager: RunManager, runtime: LangGraphRuntime) -> AsyncIterator[Worker]:
    worker = api_worker(manager, runtime)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.fixture
def app(manager: RunManager, runtime: LangGraphRuntime, settings: ApiSettings) -> Starlette:
    return create_app(manager, runtime, settings)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        yield client
