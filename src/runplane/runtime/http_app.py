"""The `http` section of a langgraph.json, and the project's own app it names (`http.app`), loaded as
LangGraph's server loads it: `"./webapp.py:app"` (a file, relative to the json's directory) or
`"package.module:app"`, naming a Starlette or FastAPI application.

Load it after the graphs: their `env` and `dependencies` are what the app module may need too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from runplane.core.errors import InvalidInput
from runplane.runtime.project import import_source

_JS_SUFFIXES = (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".tsx", ".jsx")


def http_section(config_path: str | None) -> Any:
    """The `http` section of a langgraph.json (None when absent, or when serving the demo graphs)."""
    if config_path is None:
        return None
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {config_path!r}: {exc}") from exc
    return config.get("http") if isinstance(config, dict) else None


def load_http_app(target: str, config_path: str) -> Starlette:
    """The application `target` (`./webapp.py:app` or `package.module:app`) names.

    Raises:
        InvalidInput: the target is malformed, fails to import, or is not a Starlette application.
    """
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        raise InvalidInput(
            f"http.app must be './file.py:variable' or 'package.module:variable', got {target!r}"
        )
    if source.endswith(_JS_SUFFIXES):
        raise InvalidInput(f"http.app {target!r}: JavaScript apps are not supported by runplane")
    base_dir = Path(config_path).resolve().parent
    # Fresh: the app object is changed when the API is mounted beside it, so two servers in one
    # process must not share it.
    module = import_source(source, base_dir, f"http.app {target!r}", prefix="runplane_http_app", fresh=True)
    app = getattr(module, attr, None)
    if not isinstance(app, Starlette):
        raise InvalidInput(
            f"http.app {target!r} is a {type(app).__name__}, not a Starlette or FastAPI application "
            "(app = Starlette(...) or app = FastAPI(...))"
        )
    return app
