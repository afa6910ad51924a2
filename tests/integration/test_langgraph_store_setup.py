"""Opening LangGraph's persistence (checkpointer, store) on runplane's database URL."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.langgraph_store import open_langgraph_store
from tests._services import postgres_database


async def test_sqlite_store_set_up_by_several_connections_at_once(tmp_path: Path) -> None:
    """Each open migrates the file on its own connection (its own thread, like another process);
    LangGraph's migrations are not atomic, so the losers of a race must try again, not fail."""
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'round{round_}.db'}"
        async with AsyncExitStack() as stack:
            stores = await asyncio.gather(
                *(stack.enter_async_context(open_langgraph_store(url)) for _ in range(4))
            )
            await stores[0].aput(("ns",), "k", {"round": round_})
            for store in stores:
                item = await store.aget(("ns",), "k")
                assert item is not None and item.value == {"round": round_}


async def test_pool_parameters_of_the_database_url_are_runplanes_not_libpqs() -> None:
    """`?pool_max_size=` sizes the store's pool; LangGraph's checkpointer and store, opened on the
    same URL, must not hand it to libpq (which refuses unknown parameters)."""
    with postgres_database() as url:
        sized = f"{url}?pool_max_size=3&pool_timeout=5"
        async with open_checkpointer(sized) as saver, open_langgraph_store(sized) as store:
            await store.aput(("ns",), "k", {"v": 1})
            assert await saver.aget_tuple({"configurable": {"thread_id": "t"}}) is None
            item = await store.aget(("ns",), "k")
            assert item is not None and item.value == {"v": 1}
