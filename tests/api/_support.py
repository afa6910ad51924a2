"""Helpers shared by the API and SDK tests: an SSE parser, a real uvicorn server on loopback, and a
look at a thread's checkpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.types import ASGIApp

from runplane.core.errors import NotFound
from runplane.core.manager import RunManager
from runplane.runtime.graphs import LangGraphRuntime


@dataclass(frozen=True)
class Sse:
    event: str
    data: Any
    id: str | None = None


def parse_sse(text: str) -> list[Sse]:
    """Events of an SSE body (comments such as heartbeats are skipped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        if "event" in fields:
            data = orjson.loads(fields["data"]) if fields.get("data") else None
            events.append(Sse(fields["event"], data, fields.get("id")))
    return events


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, **options: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port, in this event loop; yields the base URL.

    `options` override the `uvicorn.Config` defaults below (e.g. `lifespan="on"`, a `ws` protocol).
    """
    config = uvicorn.Config(
        app,
        **{
            "host": "127.0.0.1",
            "port": 0,
            "log_level": "warning",
            "lifespan": "off",
            "ws": "none",
            "timeout_graceful_shutdown": 1,
            **options,
        },
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def checkpoint_ids(runtime: LangGraphRuntime, thread_id: str) -> list[str]:
    """Ids of the thread's root checkpoints in the runtime's saver, newest first."""
    config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return [
        saved.config["configurable"]["checkpoint_id"] async for saved in runtime.checkpointer.alist(config)
    ]


async def ended(manager: RunManager, run_id: str) -> str | None:
    """The run's terminal status, once it has one (None: it was deleted, as a rollback does)."""
    try:
        run = await manager.wait_for_run(run_id, timeout=10)
    except NotFound:
        return None
    return None if run is None else run.status
