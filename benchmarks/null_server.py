"""The client's floor: a server that does nothing but answer agentbench, for `overhead.py --modes null`.

    .venv/bin/python benchmarks/null_server.py --port 8123

It speaks just enough of LangGraph's API for `agentbench.py` W1, W2, W3 and W6 (threads.create,
runs.create, runs.wait, runs.join, runs.get, runs.stream) and runs the reference app's graphs as
the thinnest possible stand-ins: `echo` returns its input, `sleepy` sleeps, `chatty` emits its
custom events and message chunks. No store, no worker, no checkpoint, nothing durable: all that
is left is uvicorn (on uvloop and httptools, as `runplane serve`), loopback TCP and agentbench's
own `langgraph-sdk` client. What a workload takes here is what the client and the machine take
before any server does any work; a server's figure minus this one is what the server costs.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_RUN_PATH = re.compile(r"^/threads/([^/]+)/runs(?:/(wait|stream)|/([^/]+)(/join)?)?$")


class NullApi:
    """Runs that end as their graph's stand-in says, held only as asyncio tasks."""

    def __init__(self) -> None:
        self.runs: dict[str, asyncio.Task[Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path, method = scope["path"], scope["method"]
        if path == "/ok":
            return await _json(send, {"ok": True})
        if path == "/threads" and method == "POST":
            return await _json(send, _thread(str(uuid.uuid4())))
        match = _RUN_PATH.match(path)
        if match is None:
            return await _json(send, {"detail": "not found"}, 404)
        thread_id, verb, run_id, join = match.groups()
        if run_id is not None:
            task = self.runs.get(run_id)
            if task is None:
                return await _json(send, {"detail": "run not found"}, 404)
            if join:
                return await _json(send, await asyncio.shield(task))
            status = "success" if task.done() else "running"
            return await _json(send, _run(run_id, thread_id, status))
        request = orjson.loads(body or b"{}")
        graph, given = request.get("assistant_id"), request.get("input") or {}
        if verb == "stream":
            return await _stream(send, graph, given)
        task = asyncio.ensure_future(_values(graph, given))
        if verb == "wait":
            return await _json(send, await task)
        run_id = str(uuid.uuid4())
        self.runs[run_id] = task
        return await _json(send, _run(run_id, thread_id, "pending"))


async def _values(graph: str, given: dict[str, Any]) -> dict[str, Any]:
    if graph == "sleepy":
        seconds = float(given.get("seconds", 1.0))
        await asyncio.sleep(seconds)
        return {**given, "slept": seconds}
    return given


async def _stream(send: Send, graph: str, given: dict[str, Any]) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )

    async def event(name: str, data: Any) -> None:
        frame = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        await send({"type": "http.response.body", "body": frame, "more_body": True})

    await event("metadata", {"run_id": str(uuid.uuid4()), "attempt": 1})
    for i in range(int(given.get("k", 0))):
        await event("custom", {"i": i})
    for i in range(int(given.get("tokens", 0))):
        await event("messages/partial", [{"type": "ai", "content": f"tok{i}", "id": "m"}])
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _thread(thread_id: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"thread_id": thread_id, "created_at": now, "updated_at": now, "metadata": {}, "status": "idle"}


def _run(run_id: str, thread_id: str, status: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {"run_id": run_id, "thread_id": thread_id, "status": status, "created_at": now, "updated_at": now}


async def _json(send: Send, payload: Any, status: int = 200) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        NullApi(), host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools"
    )


if __name__ == "__main__":
    main()
