"""Property-based fuzzing of every route against `/openapi.json` (schemathesis, in-process ASGI).

For each operation, schemathesis sends its documented examples, edge cases of every schema
(coverage phase, including invalid values) and random valid requests. Each answer must be no 5xx,
carry a documented status, content type and headers, and match the documented schema; invalid
requests must be refused. Bounded: few examples per operation and a server that never lets a wait,
join or stream outlast `max_wait_seconds`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from starlette.types import Receive, Scope, Send

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings
from runplane.testing import memory_manager
from tests.api._fakes import FakeRuntime, FakeWorker


class FuzzApp:
    """The API over the fake runtime, with a fake worker running in the app's own event loop (the
    one schemathesis drives the ASGI app from), started and stopped by the lifespan."""

    def __init__(self) -> None:
        self.manager = memory_manager(settings=ManagerSettings(wait_fallback_seconds=0.1))
        self.runtime = FakeRuntime()
        self.app = create_app(
            self.manager,
            self.runtime,  # type: ignore[arg-type]
            ApiSettings(max_body_bytes=256 * 1024, heartbeat_seconds=0.05, max_wait_seconds=0.5),
        )
        self.worker: FakeWorker | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.worker = FakeWorker(self.manager, self.runtime)
                await self.worker.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.worker is not None:
                    with contextlib.suppress(Exception):
                        await self.worker.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


schema = schemathesis.openapi.from_asgi("/openapi.json", FuzzApp())


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_conformance(case: Any) -> None:
    case.call_and_validate()
