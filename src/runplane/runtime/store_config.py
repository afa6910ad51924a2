"""The `store` section of a langgraph.json, as LangGraph's server reads it:

```json
"store": {
  "index": {"embed": "./embeddings.py:embed", "dims": 64, "fields": ["$"]},
  "ttl": {"default_ttl": null, "refresh_on_read": true}
}
```

`index.embed` is a Python function or LangChain `Embeddings` object given as `./file.py:name` or
`package.module:name`, or a `provider:model` string that LangGraph resolves with LangChain's
`init_embeddings` (which needs that provider's package). With an index, `/store/items/search`
takes a `query` (semantic search) on memory, SQLite (sqlite-vec) and PostgreSQL (pgvector).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.store.base import TTLConfig

from runplane.core.errors import InvalidInput
from runplane.runtime.graphs import load_module_file

#: Per-item TTLs are always available; LangGraph's `refresh_on_read` default.
DEFAULT_TTL: TTLConfig = {"refresh_on_read": True}


@dataclass(frozen=True, slots=True)
class StoreSettings:
    index: dict[str, Any] | None = None
    ttl: TTLConfig = field(default_factory=lambda: TTLConfig(**DEFAULT_TTL))


def _embedder(target: str, base_dir: Path) -> Any:
    source, _, attr = target.rpartition(":")
    if source.endswith(".py") or "/" in source or "\\" in source:
        return getattr(load_module_file(base_dir / source), attr)
    try:
        module = importlib.import_module(source)
    except ImportError:
        return target  # "provider:model": LangGraph resolves it (init_embeddings)
    return getattr(module, attr)


def store_settings(config_path: str | None) -> StoreSettings:
    """The long-term store settings of a langgraph.json (defaults without one).

    Raises:
        InvalidInput: the section is malformed or names an embedding function that is not there.
    """
    if config_path is None:
        return StoreSettings()
    path = Path(config_path)
    try:
        section = json.loads(path.read_text()).get("store") or {}
    except (OSError, ValueError, AttributeError) as exc:
        raise InvalidInput(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(section, dict):
        raise InvalidInput(f"{str(path)!r}: 'store' must be an object")
    ttl = TTLConfig(**DEFAULT_TTL)
    given_ttl = section.get("ttl") or {}
    if not isinstance(given_ttl, dict):
        raise InvalidInput(f"{str(path)!r}: 'store.ttl' must be an object")
    ttl.update({k: v for k, v in given_ttl.items() if k in ("default_ttl", "refresh_on_read")})  # type: ignore[typeddict-item]
    index = section.get("index")
    if index is None:
        return StoreSettings(None, ttl)
    if not isinstance(index, dict) or not isinstance(index.get("dims"), int) or "embed" not in index:
        raise InvalidInput(f"{str(path)!r}: 'store.index' needs 'dims' (an integer) and 'embed'")
    embed = index["embed"]
    if isinstance(embed, str):
        try:
            embed = _embedder(embed, path.resolve().parent)
        except AttributeError as exc:
            raise InvalidInput(f"{str(path)!r}: store.index.embed {index['embed']!r}: {exc}") from exc
    return StoreSettings({**index, "embed": embed}, ttl)
