"""Opening LangGraph's store on a database that other processes open at the same moment."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from runplane.runtime.langgraph_store import open_langgraph_store


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
