"""Serving the example application for real (uvicorn on a loopback port, lifespan on) and reading
SSE, for the embedding tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp

from tests.api._support import serve as serve_app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "embedded_app"
ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn on a free 127.0.0.1 port in this event loop, with its lifespan (the
    host's startup opens runplane, its shutdown drains it); yields a client for it."""
    async with (
        serve_app(app, lifespan="on", timeout_graceful_shutdown=5) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        yield client


def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE frames as `{"event", "data", "id"}` (data decoded from JSON), heartbeats skipped."""
    events = []
    for frame in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in frame.splitlines():
            if line and not line.startswith(":"):
                key, _, value = line.partition(":")
                fields[key] = fields.get(key, "") + value.removeprefix(" ")
        if "data" in fields:
            events.append(
                {"event": fields.get("event"), "data": json.loads(fields["data"]), "id": fields.get("id")}
            )
    return events


async def until(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Poll an async condition that nothing can be awaited for (a run's status in another worker)."""
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - another worker, another process
            await asyncio.sleep(0.02)
