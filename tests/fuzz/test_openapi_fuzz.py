"""Property-based fuzzing of every route against `/openapi.json` (schemathesis, in-process ASGI).

For each of the 36 operations, schemathesis sends the documented examples, edge cases of every
schema (the coverage phase, invalid values included) and random valid requests: about 3,800
requests in all. Every answer must be no 5xx, carry a documented status, content type and headers
and match the documented schema (SSE events included), and invalid requests must be refused.

It stays bounded (~40 s on two cores): a few random examples per operation, and a server whose
waits, joins and streams end after `max_wait_seconds`, since generated runs may be delayed by up to
`after_seconds` (one day) or queued behind such a run, and heartbeats would defeat any client-side
read timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from langgraph.store.memory import InMemoryStore
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.types import Receive, Scope, Send

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings
from runplane.runtime.items import LangGraphItems
from runplane.testing import memory_manager
from runplane.worker import Worker
from tests.api.conftest import api_runtime, api_worker


class FuzzApp:
    """The API over the test graphs (`tests.api.graphs`), with the real worker executing runs in the
    event loop that schemathesis drives the app from (started by the first API request, stopped by
    `stop`)."""

    def __init__(self) -> None:
        self.manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.1))
        self.manager.attach_items(LangGraphItems(InMemoryStore()))
        self.runtime = api_runtime()
        settings = ApiSettings(max_body_bytes=256 * 1024, heartbeat_seconds=0.05, max_wait_seconds=0.05)
        self.app = create_app(self.manager, self.runtime, settings)
        self.worker: Worker | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.worker is None:
            self.loop = asyncio.get_running_loop()
            self.worker = api_worker(self.manager, self.runtime)
            await self.worker.start()
        await self.app(scope, receive, send)

    def stop(self) -> None:
        """Stop the worker from the test's thread (it must not outlive this module)."""
        if self.worker is not None and self.loop is not None:
            asyncio.run_coroutine_threadsafe(self.worker.stop(), self.loop).result(timeout=30)
            self.worker = None


APP = FuzzApp()
#: Left to their official clients' tests (tests/e2e/test_thread_stream.py, test_mcp.py, test_a2a.py and
#: test_thread_lifecycle.py): the thread streams follow a thread for as long as the client listens (and
#: wait for a thread that does not exist yet), so a fuzzed call never ends; the agent protocols carry
#: their own JSON-RPC envelopes inside a free-form body.
NOT_FUZZED = r"^/(threads/\{thread_id\}/(stream|commands)|mcp|a2a/)"
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path_regex=NOT_FUZZED)


@pytest.fixture(scope="module", autouse=True)
def _stop_worker() -> Iterator[None]:
    yield
    APP.stop()


#: Refusals of well-formed requests that depend on more than the schema, answered 400 as the reference
#: server does: a state write the thread's graph refuses (no graph, an unknown `as_node`, a list where
#: the state is a dict), and a run given both `configurable` and `context`.
JUDGED_400 = (
    "has no assigned graph ID",
    "supersteps",
    "does not exist",
    "Expected dict",
    "configurable and context",
)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_conformance(case: Any) -> None:
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if response.status_code == 400 and any(reason in response.text for reason in JUDGED_400):
        return
    if str(response.status_code) in case.operation.definition.raw.get("responses", {}) and not any(
        code.startswith("2") for code in case.operation.definition.raw.get("responses", {})
    ):
        return  # a route that only refuses, as documented (LangGraph's `GET /mcp` is a 405)
    case.validate_response(response, checks=[positive_data_acceptance])
