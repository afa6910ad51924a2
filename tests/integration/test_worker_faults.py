"""The worker rides out its database turning read-only under a running run, in-process on a real
SQLite file (store and LangGraph checkpointer on the same file), and still fails runs whose graph
itself meets the same error.

Making the file read-only with chmod would change nothing here: open descriptors keep their mode,
and root ignores permission bits. `PRAGMA query_only` makes SQLite refuse every write on the
connection with the very error a read-only database gives (SQLITE_READONLY, "attempt to write a
readonly database"), so both of runplane's connections are switched to it and back.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from runplane.core.manager import ManagerSettings, RunManager
from runplane.events.memory import InMemoryBus
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.sqlite import SqliteStore
from runplane.worker import Worker


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    own_db: str


#: Every step execution, in order (a step run twice appears twice).
RAN: list[str] = []
#: Set when the second step starts; the step ends once `release` is set.
REACHED: dict[str, asyncio.Event] = {}


def _step(name: str) -> Any:
    async def step(state: State) -> State:
        RAN.append(name)
        if name == "second":
            REACHED["second"].set()
            await REACHED["release"].wait()
        return {"log": [name]}

    return step


_three = StateGraph(State)
for _name in ("first", "second", "third"):
    _three.add_node(_name, _step(_name))
_three.add_edge(START, "first")
_three.add_edge("first", "second")
_three.add_edge("second", "third")
_three.add_edge("third", END)
three = _three.compile(name="three")


async def _writes_its_own_database(state: State) -> State:
    """A node with a database of its own, which refuses writes: the graph's failure, not ours."""
    conn = sqlite3.connect(state["own_db"])
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("INSERT INTO t VALUES (1)")
    finally:
        conn.close()
    return {}


_own = StateGraph(State)
_own.add_node("write", _writes_its_own_database)
_own.add_edge(START, "write")
_own.add_edge("write", END)
own = _own.compile(name="own")


@dataclass
class Setup:
    store: SqliteStore
    saver: Any
    manager: RunManager
    worker: Worker

    async def read_only(self, on: bool) -> None:
        """Both of runplane's connections to the file refuse (or accept again) every write."""
        pragma = f"PRAGMA query_only = {'ON' if on else 'OFF'}"
        await self.saver.conn.execute(pragma)
        assert self.store._db is not None  # the store's one connection: no public handle to it
        await self.store._db.execute(pragma)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    RAN.clear()
    REACHED.clear()
    REACHED.update(second=asyncio.Event(), release=asyncio.Event())
    path = str(tmp_path / "runplane.db")
    async with SqliteStore(path) as store, open_checkpointer(f"sqlite:///{path}") as saver:
        manager = RunManager(store, InMemoryBus(), settings=ManagerSettings(lease_seconds=30))
        worker = Worker(manager, LangGraphRuntime({"three": three, "own": own}, saver), shutdown_grace=1.0)
        await worker.start()
        try:
            yield Setup(store, saver, manager, worker)
        finally:
            await worker.stop()


async def test_a_database_turned_read_only_pauses_the_run_which_resumes_without_redoing_steps(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    manager = setup.manager
    thread = await manager.create_thread()
    run = await manager.create_run(
        thread.thread_id, "three", kwargs={"graph_id": "three", "input": {"log": []}, "durability": "sync"}
    )
    async with asyncio.timeout(10):
        await REACHED["second"].wait()
    with caplog.at_level(logging.WARNING, logger="runplane.worker.worker"):
        await setup.read_only(True)
        REACHED["release"].set()  # the step ends; its checkpoint cannot be written
        async with asyncio.timeout(10):
            while not any("paused by an infrastructure fault" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    paused = await manager.get_run(run.run_id)  # reads still work
    assert paused.status == "running"
    await setup.read_only(False)

    done = await manager.wait_for_run(run.run_id, timeout=30)
    assert done is not None
    assert (done.status, done.attempt, done.error) == ("success", 1, None)
    # The first step's checkpoint had landed: not run again. The second step ran again (its own
    # checkpoint was refused), then the third.
    assert RAN == ["first", "second", "second", "third"]
    assert setup.worker.ridden_out == 1
    thread_after = await manager.get_thread(thread.thread_id)
    assert thread_after.values == {"log": ["first", "second", "third"]}


async def test_the_graphs_own_database_error_still_fails_the_run(setup: Setup, tmp_path: Path) -> None:
    manager = setup.manager
    thread = await manager.create_thread()
    own_db = str(tmp_path / "own.db")
    run = await manager.create_run(
        thread.thread_id, "own", kwargs={"graph_id": "own", "input": {"own_db": own_db}}
    )
    done = await manager.wait_for_run(run.run_id, timeout=30)
    assert done is not None
    assert (done.status, done.attempt) == ("error", 1)
    assert done.error is not None and "readonly" in done.error
    assert setup.worker.ridden_out == 0
