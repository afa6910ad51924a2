"""Semantic search over the long-term store (`query`, with langgraph.json's `store.index`), on
LangGraph's in-memory and SQLite (sqlite-vec) stores, through runplane's adapter and manager. The
embeddings are a deterministic local function (`index_app/embeddings.py`): no model is loaded."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from runplane.runtime.items import LangGraphItems
from runplane.runtime.langgraph_store import open_langgraph_store, store_settings
from runplane.runtime.project import read_project
from runplane.testing import memory_manager

CONFIG = Path(__file__).with_name("index_app") / "langgraph.json"


def test_settings_are_read_from_langgraph_json() -> None:
    settings = store_settings(read_project(str(CONFIG)))
    assert settings.index is not None and settings.index["dims"] == 8
    # The function is wrapped as LangChain embeddings (LangGraph's `ensure_embeddings`).
    embed = settings.index["embed"]
    assert isinstance(embed, Embeddings)
    assert len(embed.embed_query("tea")) == 8
    assert settings.ttl == {"refresh_on_read": False}


#: sqlite-vec is a loadable extension: Python's sqlite3 must be built to load extensions.
CAN_LOAD_EXTENSIONS = hasattr(sqlite3.Connection, "enable_load_extension")


@pytest.mark.parametrize(
    "backend",
    [
        "memory",
        pytest.param(
            "sqlite",
            marks=pytest.mark.skipif(
                not CAN_LOAD_EXTENSIONS, reason="this Python's sqlite3 cannot load extensions (sqlite-vec)"
            ),
        ),
    ],
)
async def test_query_ranks_by_meaning(backend: str, tmp_path: Path) -> None:
    settings = store_settings(read_project(str(CONFIG)))
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'runplane.db'}"
    async with open_langgraph_store(url, settings) as graph_store:
        manager = memory_manager()
        manager.attach_items(LangGraphItems(graph_store))
        notes = (("a", "I drink tea every morning"), ("b", "chess and more chess"), ("c", "sailing on water"))
        for key, text in notes:
            await manager.put_item(("notes",), key, {"text": text})
        hits = await manager.search_items(("notes",), query="a cup of tea", limit=3)
        assert hits[0].key == "a"
        scores = [h.score for h in hits]
        assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        boats = await manager.search_items(("notes",), query="water sailing", limit=1)
        assert [h.key for h in boats] == ["c"]
        # Items put with `index=False` are stored but not found by meaning.
        await manager.put_item(("notes",), "d", {"text": "tea tea tea"}, index=False)
        assert "d" not in [h.key for h in await manager.search_items(("notes",), query="tea", limit=2)]
