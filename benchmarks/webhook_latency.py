"""Webhook delivery latency: from a run's end (its terminal status committed) to the POST received.

Not a test. Usage (from the repository root):

    python benchmarks/webhook_latency.py --runs 200
    python benchmarks/webhook_latency.py --runs 200 --database-url sqlite:///bench.db

Everything runs in one process on loopback, as `runplane serve` composes it: the store (a temporary
SQLite file by default), the in-memory bus, a worker executing the demo `echo` graph, the webhook
dispatcher, and a receiver (Starlette on uvicorn). Runs are created one after another; the latency of
each is the receiver's wall clock at arrival minus the run's `run_ended_at` in the payload (the
instant the store wrote the terminal status, same clock). It covers the outbox write, the hint to
the dispatcher, the claim, and the HTTP POST.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson
import uvicorn
from langgraph.checkpoint.memory import InMemorySaver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runplane.core.manager import RunManager
from runplane.core.webhooks import AddressPolicy
from runplane.demo.graphs import echo
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores import open_store
from runplane.worker import Worker
from runplane.worker.scheduler import CroniterSchedule
from runplane.worker.webhooks import WebhookDispatcher, WebhookGuard


async def main(runs: int, database_url: str) -> None:
    latencies: list[float] = []
    arrived = asyncio.Condition()

    async def hook(request: Request) -> Response:
        received = time.time()
        ended = datetime.fromisoformat(orjson.loads(await request.body())["run_ended_at"]).timestamp()
        async with arrived:
            latencies.append(received - ended)
            arrived.notify_all()
        return Response(status_code=204)

    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), host="127.0.0.1", port=0,
                       log_level="warning", lifespan="off")
    )  # fmt: skip
    serving = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event for "listening"
        if serving.done():
            serving.result()
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/hook"

    store = open_store(database_url)
    await store.open()
    guard = WebhookGuard(AddressPolicy(allow_loopback=True))
    manager = RunManager(store, InMemoryBus(), schedule=CroniterSchedule(), url_guard=guard)
    worker = Worker(manager, LangGraphRuntime({"echo": echo}, InMemorySaver()), concurrency=4)
    dispatcher = WebhookDispatcher(manager, guard, secret="bench")
    await worker.start()
    await dispatcher.start()
    try:
        thread = await manager.create_thread()
        for i in range(runs):
            await manager.create_run(
                thread.thread_id,
                "echo",
                kwargs={"graph_id": "echo", "input": {"messages": [{"role": "user", "content": str(i)}]},
                        "webhook": url},
            )  # fmt: skip
            async with arrived:  # one at a time: latency, not throughput
                await arrived.wait_for(lambda i=i: len(latencies) > i)
    finally:
        await dispatcher.stop()
        await worker.stop()
        await store.close()
        server.should_exit = True
        await serving
    ms = sorted(x * 1000 for x in latencies)
    print(f"store {database_url.split('://')[0]}, {runs} webhooks, run end -> POST received (ms):")
    print(
        f"  p50 {statistics.median(ms):.1f}  p90 {ms[int(len(ms) * 0.9)]:.1f}  "
        f"p99 {ms[min(len(ms) - 1, int(len(ms) * 0.99))]:.1f}  max {ms[-1]:.1f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        url = args.database_url or f"sqlite:///{Path(directory) / 'bench.db'}"
        asyncio.run(main(args.runs, url))
