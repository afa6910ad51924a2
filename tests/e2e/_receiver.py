"""A webhook receiver for tests: a Starlette app on a loopback port that records every POST.

Each answer can be scripted (status, redirect, or holding the request open), and tests await
deliveries instead of sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.api._support import serve


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    #: `time.time()` when the request was received.
    received_at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    #: Answers for the next requests, in order (status, or ("redirect", location)); then 200.
    script: list[Any] = field(default_factory=list)
    #: While not None, requests are held open for good (the sender's POST stays in flight).
    hold: object | None = None
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """Wait until `count` deliveries arrived (an event, not a sleep)."""
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.deliveries) >= count)
        return self.deliveries[:count]


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> Response:
        delivery = Delivery(request.url.path, dict(request.headers), await request.body(), time.time())
        async with state.arrived:
            state.deliveries.append(delivery)
            state.arrived.notify_all()
        if state.hold is not None:
            await asyncio.Event().wait()  # never answers: the sender's POST stays in flight
        answer = state.script.pop(0) if state.script else 200
        if isinstance(answer, tuple):
            return Response(status_code=307, headers={"Location": answer[1]})
        return Response(status_code=answer)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    async with serve(app) as url:
        state.url = url
        yield state
