"""A worker process for `test_crash_recovery.py`: SQLite store + SQLite checkpointer in one file.

    python crash_worker.py DB LOG create   # create a run of the `steps` graph, print its ids, work
    python crash_worker.py DB LOG RUN_ID   # work until that run is terminal, print its status

The graph's three steps append their name to LOG. Step 2 blocks forever while CRASH_BLOCK=1, so the
first process can be killed in the middle of the run.
"""

from __future__ import annotations

import asyncio
import json
import operator
import os
import sys
from typing import Annotated

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from runplane.core.manager import ManagerSettings, RunManager
from runplane.events.memory import InMemoryBus
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.sqlite.store import SqliteStore
from runplane.worker import Worker

LOG = sys.argv[2]


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def record(step: str) -> None:
    with open(LOG, "a") as log:
        log.write(f"{step}\n")
        log.flush()
        os.fsync(log.fileno())


async def step1(state: State) -> State:
    record("step1")
    return {"log": ["step1"]}


async def step2(state: State) -> State:
    record("step2")
    if os.environ.get("CRASH_BLOCK") == "1":
        await asyncio.Event().wait()  # until killed
    return {"log": ["step2"]}


async def step3(state: State) -> State:
    record("step3")
    return {"log": ["step3"]}


builder = StateGraph(State)
for name, node in (("step1", step1), ("step2", step2), ("step3", step3)):
    builder.add_node(name, node)
builder.add_edge(START, "step1")
builder.add_edge("step1", "step2")
builder.add_edge("step2", "step3")
builder.add_edge("step3", END)
steps = builder.compile(name="steps")


async def main(db: str, what: str) -> None:
    async with SqliteStore(db) as store, open_checkpointer(f"sqlite:///{db}") as saver:
        manager = RunManager(store, InMemoryBus(), settings=ManagerSettings(lease_seconds=1.0))
        runtime = LangGraphRuntime({"steps": steps}, saver)
        worker = Worker(manager, runtime, recovery_interval=0.05, poll_interval=0.05)
        if what == "create":
            thread = await manager.create_thread()
            run = await manager.create_run(
                thread.thread_id, "steps", kwargs={"graph_id": "steps", "input": {"log": ["input"]}}
            )
            print(json.dumps({"thread_id": thread.thread_id, "run_id": run.run_id}), flush=True)
            await worker.start()
            await asyncio.Event().wait()  # until killed
        await worker.start()
        final = await manager.wait_for_run(what, timeout=30)
        await worker.stop()
        print(json.dumps({"status": final.status if final else None}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[3]))
