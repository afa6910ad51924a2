"""API tests run in-process: the app over an in-memory manager, the fake runtime and the fake worker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from langgraph.store.memory import InMemoryStore
from starlette.applications import Starlette

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.runtime.items import LangGraphItems
from runplane.testing import memory_manager
from tests.api._fakes import FakeRuntime, FakeWorker

BASE_URL = "http://runplane.test"


@pytest.fixture
def settings() -> ApiSettings:
    return ApiSettings(max_body_bytes=64 * 1024, heartbeat_seconds=0.05)


@pytest.fixture
def manager() -> RunManager:
    manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.2))
    # The long-term store the graphs would get: the real adapter over LangGraph's InMemoryStore.
    manager.attach_items(LangGraphItems(InMemoryStore()))
    return manager


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
async def worker(manager: RunManager, runtime: FakeRuntime) -> AsyncIterator[FakeWorker]:
    worker = FakeWorker(manager, runtime)
    await worker.start()
    yield worker
    await worker.stop()


@pytest.fixture
def app(manager: RunManager, runtime: FakeRuntime, settings: ApiSettings) -> Starlette:
    return create_app(manager, runtime, settings)  # type: ignore[arg-type]


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client:
        yield client
