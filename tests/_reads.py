"""Counting the reads a run makes: of the store's runs, and of the checkpointer's database.

Shared by the tests that show a read is skipped (`test_new_thread_first_read`,
`test_final_read_from_own_puts`, `test_wait_taken_here`), each on a deployment of its own graphs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple

from runplane.core.manager import RunManager
from runplane.core.models import Outcome, Run, TokenUsage
from runplane.events.memory import InMemoryBus
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.checkpointer.base import FencedWrites
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores import open_store
from runplane.worker.executor import Execution
from tests._services import postgres_database


@asynccontextmanager
async def deployment(
    kind: str, tmp_path: Path, graphs: Mapping[str, Any]
) -> AsyncIterator[tuple[RunManager, LangGraphRuntime]]:
    """A manager and a runtime of `graphs` on a fresh store of `kind` (memory, sqlite, postgres)
    with its own saver."""
    with contextlib.ExitStack() as databases:
        url = {"memory": "memory:", "sqlite": f"sqlite:///{tmp_path / 'runplane.db'}"}.get(kind)
        if url is None:
            url = databases.enter_context(postgres_database())
        store = open_store(url)
        await store.open()
        try:
            async with open_checkpointer(url) as saver:
                yield RunManager(store, InMemoryBus()), LangGraphRuntime(dict(graphs), saver)
        finally:
            await store.close()


def saver_class_under_fence(saver: BaseCheckpointSaver[Any]) -> Any:
    """The saver's own LangGraph class, the one `FencedWrites` passes reads and writes on to."""
    mro = type(saver).__mro__
    return mro[mro.index(FencedWrites) + 1]


@contextlib.contextmanager
def reads_reaching_the_saver(saver: BaseCheckpointSaver[Any]) -> Iterator[list[RunnableConfig]]:
    """The `aget_tuple` calls that `FencedWrites` passes on to the saver's own class."""
    inner = saver_class_under_fence(saver)
    original = inner.aget_tuple
    reads: list[RunnableConfig] = []

    async def counted(self: Any, config: RunnableConfig) -> CheckpointTuple | None:
        reads.append(config)
        found: CheckpointTuple | None = await original(self, config)
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(inner, "aget_tuple", counted)
        yield reads


class RunReads:
    """The store's reads of runs (`get_run`) through `manager`, by the task that made each."""

    def __init__(self, manager: RunManager) -> None:
        self.made: list[tuple[asyncio.Task[Any] | None, str]] = []
        store: Any = manager.store
        read = store.get_run

        async def counted(run_id: str, *args: Any, **kwargs: Any) -> Run:
            self.made.append((asyncio.current_task(), run_id))
            run: Run = await read(run_id, *args, **kwargs)
            return run

        store.get_run = counted

    def by(self, task: asyncio.Task[Any] | None) -> list[str]:
        return [run_id for made_by, run_id in self.made if made_by is task]


async def execute_once(
    manager: RunManager, runtime: LangGraphRuntime, thread_id: str, graph_id: str
) -> tuple[Run, Outcome, list[RunnableConfig]]:
    """Create a run of `graph_id` on `thread_id` and execute it as a worker does (claimed, fenced,
    not yet finished): the claimed run, its outcome, and the reads it made of the saver's database."""
    run = await manager.create_run(thread_id, graph_id, kwargs={"graph_id": graph_id, "input": {}})
    claimed = await manager.claim("worker")
    assert claimed is not None and claimed.run_id == run.run_id

    async def publish(event: str, payload: Any) -> None:
        pass

    async def progress(model_name: str | None, usage: TokenUsage) -> None:
        pass

    with reads_reaching_the_saver(runtime.checkpointer) as reads:
        outcome = await Execution(
            claimed, runtime, publish, progress, lambda: manager.hold(claimed)
        ).execute()
    return claimed, outcome, reads
