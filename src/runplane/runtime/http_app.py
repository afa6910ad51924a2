"""The `http` section of a langgraph.json, and the project's own app it names (`http.app`), loaded as
LangGraph's server loads it: `"./webapp.py:app"` (a file, relative to the json's directory) or
`"package.module:app"`, naming a Starlette or FastAPI application.

Load it after the graphs: their `env` and `dependencies` are what the app module may need too.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from runplane.core.errors import InvalidInput

_JS_SUFFIXES = (".js", ".mjs", ".cjs", ".ts", ".mts", ".cts", ".tsx", ".jsx")
#: Each load executes the file anew, under a new module name: the app object is changed when the
#: API is mounted beside it, so two servers in one process must not share it.
_LOADS = itertools.count(1)


def http_section(config_path: str | None) -> Any:
    """The `http` section of a langgraph.json (None when absent, or when serving the demo graphs)."""
    if config_path is None:
        return None
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {config_path!r}: {exc}") from exc
    return config.get("http") if isinstance(config, dict) else None


def _exec_file(path: Path) -> Any:
    if not path.is_file():
        raise InvalidInput(f"http.app file {str(path)!r} does not exist")
    name = f"runplane_http_app_{path.stem}_{next(_LOADS)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"cannot load {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec: dataclasses and pydantic resolve annotations through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


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
    try:
        if "/" in source or "\\" in source or source.endswith(".py"):
            module = _exec_file((base_dir / source).resolve())
        else:
            module = importlib.import_module(source)
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"http.app {target!r}: importing {source} failed: {type(exc).__name__}: {exc}"
        ) from exc
    app = getattr(module, attr, None)
    if not isinstance(app, Starlette):
        raise InvalidInput(
            f"http.app {target!r} is a {type(app).__name__}, not a Starlette or FastAPI application "
            "(app = Starlette(...) or app = FastAPI(...))"
        )
    return app
