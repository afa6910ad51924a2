"""Claims per run and worker CPU per run, in-process on SQLite (a worker and the manager, no HTTP).

    .venv/bin/python benchmarks/claims_per_run.py                  300 runs, 32 clients, then 100 runs, 1
    .venv/bin/python benchmarks/claims_per_run.py --runs 500 --clients 16
    PYTHONPATH=/work/wt/before/src .venv/bin/python benchmarks/claims_per_run.py   another checkout

Each client creates a thread and an `echo` run on it, and waits for the run to end. Counts the
store's claims (`claim_and_look`, or `claim_run` in a checkout that has no such method) and how
many found nothing, and the process CPU per run. Not a test: the machine is shared, so quote ratios
measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from runplane.core.manager import RunManager
from runplane.demo.graphs import echo
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.sqlite.store import SqliteStore
from runplane.worker import Worker


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(runs: int, clients: int) -> str:
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore.from_url(f"sqlite:///{directory}/runplane.db")
        await store.open()
        claims = {"made": 0, "empty": 0}
        name = "claim_and_look" if hasattr(store, "claim_and_look") else "claim_run"
        claim = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            result = await claim(*args, **kwargs)
            claims["made"] += 1
            claims["empty"] += getattr(result, "run", result) is None
            return result

        setattr(store, name, counted)
        manager = RunManager(store, InMemoryBus())
        runtime = LangGraphRuntime({"echo": echo}, InMemorySaver())
        worker = Worker(manager, runtime, concurrency=256)
        await worker.start()
        todo = iter(range(runs))

        async def client() -> None:
            for i in todo:
                thread = await manager.create_thread()
                kwargs = {"graph_id": "echo", "input": {"messages": [f"m{i}"]}}
                run = await manager.create_run(thread.thread_id, "echo", kwargs=kwargs)
                await manager.wait_for_run(run.run_id, timeout=60)

        cpu, started = _cpu(), time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        cpu, wall = _cpu() - cpu, time.monotonic() - started
        await worker.stop()
        await store.close()
    return (
        f"{name}: runs {runs}, clients {clients}: claims per run {claims['made'] / runs:.2f}"
        f" (empty {claims['empty'] / runs:.2f}), polled {worker.polled},"
        f" CPU {1000 * cpu / runs:.2f} ms per run, wall {wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--clients", type=int, default=None)
    args = parser.parse_args()
    plan = [(args.runs or 300, args.clients or 32)] if args.runs or args.clients else [(300, 32), (100, 1)]
    for runs, clients in plan:
        print(asyncio.run(measure(runs, clients)))


if __name__ == "__main__":
    main()
