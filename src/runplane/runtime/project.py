"""A `langgraph.json` project, read as LangGraph's own server (`langgraph dev`) reads it.

- `graphs`: `{"id": "./path/to/file.py:attr"}` (relative to the json file's directory),
  `{"id": "package.module:attr"}`, or `{"id": {"path": ..., "description": ...}}`. The attribute
  is a compiled graph, a `StateGraph` (compiled here), or a factory (sync or async) called for each
  run. A factory takes nothing, the config, a `langgraph_sdk.runtime.ServerRuntime` (recognised by
  its annotation), or both (`factory_call`), as LangGraph's server classifies them.
- `env`: a mapping, or the path of a `.env` file; the values are set in `os.environ`.
- `dependencies`: local directories (e.g. `"."`) put on `sys.path` so graph files can import
  their own package.
- `store` (`index`, `ttl`) and `checkpointer` (`ttl`): read here, applied by `langgraph_store` and
  `checkpoint_ttl`. A key runplane does not act on is named in a warning, never silently dropped.

A graph file is registered in `sys.modules` under a unique name *before* it runs, so that code
which looks its own module up while it is being defined (dataclasses, pydantic, `typing`
resolving `from __future__ import annotations` strings) finds it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import itertools
import json
import logging
import os
import sys
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args, get_origin

from dotenv import dotenv_values
from langchain_core.runnables import RunnableConfig
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from runplane.core.errors import InvalidInput

logger = logging.getLogger(__name__)

try:  # langgraph-sdk >= 0.3 (a beta API: its two variants are private, checked by the unit tests)
    from langgraph_sdk.runtime import ServerRuntime, _ExecutionRuntime, _ReadRuntime
except ImportError:  # pragma: no cover - an SDK without it: factories take the config only
    ServerRuntime = _ExecutionRuntime = _ReadRuntime = None  # type: ignore[assignment,misc]

#: The graphs served when no langgraph.json is given.
DEMO_CONFIG = Path(__file__).parent.parent / "demo" / "langgraph.json"

#: Top-level keys this server acts on (`http` and `auth` are read by the API's composition).
SERVED_KEYS = frozenset({"graphs", "env", "dependencies", "store", "checkpointer", "auth", "http"})
#: Keys that only build a container image (`langgraph build`): a server has nothing to do with them.
BUILD_KEYS = frozenset(
    {
        "$schema",
        "python_version",
        "node_version",
        "api_version",
        "base_image",
        "image_distro",
        "pip_config_file",
        "pip_installer",
        "source",
        "dockerfile_lines",
        "keep_pkg_tools",
    }
)
#: The `store` and `checkpointer` keys honoured, per section (others are warned about).
STORE_KEYS = {
    "index": {"dims", "embed", "fields"},
    "ttl": {"refresh_on_read", "default_ttl", "sweep_interval_minutes"},
}
CHECKPOINTER_TTL_KEYS = {"strategy", "default_ttl", "sweep_interval_minutes", "sweep_limit"}

#: Why the server asks for a graph (`langgraph_sdk.runtime.AccessContext`).
AccessContext = Literal["threads.create_run", "threads.update", "threads.read", "assistants.read"]


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """Where one graph of a langgraph.json comes from."""

    graph_id: str
    #: A file path (contains "/" or ends in ".py") or a dotted module name.
    source: str
    attr: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Project:
    """A langgraph.json as read (its env and dependencies already applied)."""

    path: Path
    base_dir: Path
    #: Graph id -> its spec; or the reason the entry itself is malformed.
    specs: dict[str, GraphSpec | InvalidInput]
    #: The `store` section (`index`, `ttl`), as given.
    store: Mapping[str, Any] = field(default_factory=dict)
    #: The `checkpointer.ttl` section, as given (None: no TTL).
    checkpointer_ttl: Mapping[str, Any] | None = None


def read_project(config_path: str | Path | None) -> Project:
    """Read a langgraph.json (None: the demo graphs), apply its `env` and `dependencies`, and warn
    about every key runplane does not act on.

    Raises:
        InvalidInput: the file is unreadable, has no graphs, or its env is invalid.
    """
    path = Path(config_path) if config_path is not None else DEMO_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("graphs"), dict) or not config["graphs"]:
        raise InvalidInput(f"{str(path)!r} has no graphs")
    base_dir = path.resolve().parent
    apply_env(config.get("env"), base_dir)
    if config_path is not None:  # the demo graphs import nothing of their own
        add_dependencies(config.get("dependencies"), base_dir)
    _warn_unsupported(path, config)
    store = config.get("store") or {}
    checkpointer = config.get("checkpointer") or {}
    if not isinstance(store, Mapping) or not isinstance(checkpointer, Mapping):
        raise InvalidInput(f"{str(path)!r}: 'store' and 'checkpointer' must be objects")
    ttl = checkpointer.get("ttl")
    if ttl is not None and not isinstance(ttl, Mapping):
        raise InvalidInput(f"{str(path)!r}: 'checkpointer.ttl' must be an object")
    return Project(path, base_dir, parse_specs(config["graphs"]), dict(store), ttl)


def _warn_unsupported(path: Path, config: Mapping[str, Any]) -> None:
    build = sorted(key for key in config if key in BUILD_KEYS)
    if build:
        logger.info("%s: %s only build images; this server runs the installed environment", path, build)
    for key in sorted(set(config) - SERVED_KEYS - BUILD_KEYS):
        logger.warning("%s: %r is not supported by runplane; it is ignored", path, key)
    store = config.get("store")
    if isinstance(store, Mapping):
        for key in store:
            if key not in STORE_KEYS:
                logger.warning("%s: 'store.%s' is not supported by runplane; it is ignored", path, key)
            elif isinstance(store[key], Mapping):
                for sub in sorted(set(store[key]) - STORE_KEYS[key]):
                    logger.warning("%s: 'store.%s.%s' is not supported; it is ignored", path, key, sub)
    checkpointer = config.get("checkpointer")
    if isinstance(checkpointer, Mapping):
        for key in checkpointer:
            if key == "backend" and checkpointer[key] == "default":
                continue
            if key != "ttl":
                logger.warning("%s: 'checkpointer.%s' is not supported by runplane; it is ignored", path, key)
        ttl = checkpointer.get("ttl")
        if isinstance(ttl, Mapping):
            for sub in sorted(set(ttl) - CHECKPOINTER_TTL_KEYS):
                logger.warning("%s: 'checkpointer.ttl.%s' is not supported; it is ignored", path, sub)


def parse_specs(graphs: Mapping[str, Any]) -> dict[str, GraphSpec | InvalidInput]:
    """The `graphs` section of a langgraph.json as specs; a malformed entry as its error (it fails
    alone: the other graphs are still served)."""
    specs: dict[str, GraphSpec | InvalidInput] = {}
    for graph_id, value in graphs.items():
        target = value.get("path") if isinstance(value, Mapping) else value
        if not isinstance(target, str) or ":" not in target:
            specs[graph_id] = InvalidInput(
                f"graph {graph_id!r}: expected './file.py:variable' or 'package.module:variable', "
                f"got {value!r}"
            )
            continue
        source, attr = target.rsplit(":", 1)
        description = value.get("description") if isinstance(value, Mapping) else None
        specs[graph_id] = GraphSpec(graph_id, source, attr, description)
    return specs


def apply_env(env: Any, base_dir: Path) -> None:
    """Set the `env` section (a mapping, or a .env file relative to `base_dir`) in `os.environ`."""
    if env is None:
        return
    if isinstance(env, str):
        path = (base_dir / env).resolve()
        if not path.is_file():
            raise InvalidInput(f"env file {str(path)!r} does not exist")
        values = {k: v for k, v in dotenv_values(path).items() if v is not None}
    elif isinstance(env, Mapping):
        values = {str(k): str(v) for k, v in env.items()}
    else:
        raise InvalidInput(f"env must be a file path or a mapping, got {type(env).__name__}")
    os.environ.update(values)


def add_dependencies(dependencies: Any, base_dir: Path) -> None:
    """Put the project directory and the local directories among `dependencies` on `sys.path`, as
    `langgraph dev` does from the project directory (package names are ignored: they are
    installed, not loaded)."""
    for dependency in [".", *(dependencies or [])]:
        path = (base_dir / dependency).resolve()
        if path.is_dir() and str(path) not in sys.path:
            sys.path.append(str(path))


#: Numbers the modules loaded `fresh` (each load executes the file anew, under a new name).
_FRESH_LOADS = itertools.count(1)


def load_module_file(path: Path, *, prefix: str = "runplane_graph", fresh: bool = False) -> ModuleType:
    """Execute a Python file as a module registered in `sys.modules`: once per file (its name, from
    the file's path, is what pickled objects of the graph's classes refer to), or anew each time
    when `fresh` (an object the caller will change, as a custom app the API is mounted beside).

    Raises:
        InvalidInput: the file does not exist or is not a Python module.
    """
    path = path.resolve()
    if not path.is_file():
        raise InvalidInput(f"file {str(path)!r} does not exist")
    if fresh:
        name = f"{prefix}_{path.stem}_{next(_FRESH_LOADS)}"
    else:
        name = f"{prefix}_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
        if name in sys.modules:
            return sys.modules[name]
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


def import_source(
    source: str, base_dir: Path, what: str, *, prefix: str = "runplane_graph", fresh: bool = False
) -> ModuleType:
    """The module a langgraph.json names, as LangGraph's server finds it: a file (a path with "/"
    or ending in ".py", relative to `base_dir`; see `load_module_file`) or an importable module.
    Graphs, the store's `embed`, `auth.path` and `http.app` are all loaded through here.

    Raises:
        InvalidInput: the file does not exist, or importing it failed (the message names `what`).
    """
    try:
        if "/" in source or "\\" in source or source.endswith(".py"):
            return load_module_file(base_dir / source, prefix=prefix, fresh=fresh)
        return importlib.import_module(source)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc.message}") from None
    except Exception as exc:
        # The project's own code failed (a syntax error, a missing package): say whose.
        raise InvalidInput(f"{what}: importing {source} failed: {type(exc).__name__}: {exc}") from exc


def load_attribute(source: str, attr: str, base_dir: Path, what: str) -> Any:
    """`attr` of a file (relative to `base_dir`) or of an importable module.

    Raises:
        InvalidInput: the file or module fails to import, or has no such attribute.
    """
    module = import_source(source, base_dir, what)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidInput(f"{what}: {source} has no attribute {attr!r}") from None


def load_graph_value(spec: GraphSpec, base_dir: Path) -> Any:
    """The object a spec names: a compiled graph, a `StateGraph`, or a factory.

    Raises:
        InvalidInput: it cannot be imported, or is neither a graph nor a valid factory.
    """
    value = load_attribute(spec.source, spec.attr, base_dir, f"graph {spec.graph_id!r}")
    if isinstance(value, StateGraph):
        value = value.compile()
    if not isinstance(value, Pregel) and not callable(value):
        raise InvalidInput(f"graph {spec.graph_id!r}: {spec.attr!r} is a {type(value).__name__}, not a graph")
    if not isinstance(value, Pregel):
        factory_call(spec.graph_id, value)
    return value


# -- factories ------------------------------------------------------------------------------------

#: Builds a factory's keyword arguments from `(config, server_runtime)`.
FactoryCall = Callable[[RunnableConfig, Any], dict[str, Any]]

#: Names a factory's string annotations may use without importing them (`TYPE_CHECKING` imports).
_ANNOTATION_NAMES: dict[str, Any] = {
    "ServerRuntime": ServerRuntime,
    "RunnableConfig": RunnableConfig,
}


def _is_runtime_annotation(annotation: Any) -> bool:
    """`ServerRuntime`, `ServerRuntime[Ctx]`, a concrete runtime class, or `Annotated[...]` of one."""
    if annotation is inspect.Parameter.empty or ServerRuntime is None:
        return False
    if annotation is ServerRuntime:
        return True
    if isinstance(annotation, type):
        return issubclass(annotation, (_ExecutionRuntime, _ReadRuntime))
    origin = get_origin(annotation)
    if origin is ServerRuntime:
        return True
    args = get_args(annotation)
    return origin is not None and bool(args) and _is_runtime_annotation(args[0])


def factory_call(graph_id: str, factory: Callable[..., Any]) -> FactoryCall:
    """How to call a graph factory, from its parameters, as LangGraph's server does: none; one (a
    `ServerRuntime` if annotated so, else the config); or two, one of them a `ServerRuntime` (both
    passed by keyword, in any order).

    Raises:
        InvalidInput: more than two parameters, or two without exactly one `ServerRuntime`.
    """
    params = list(inspect.signature(factory).parameters.values())
    try:
        hints = typing.get_type_hints(factory, localns=_ANNOTATION_NAMES)
    except Exception:
        hints = {}
    runtime_params = [p.name for p in params if _is_runtime_annotation(hints.get(p.name, p.annotation))]
    if not params:
        return lambda config, runtime: {}
    if len(params) == 1:
        name = params[0].name
        if runtime_params:
            return lambda config, runtime: {name: runtime}
        return lambda config, runtime: {name: config}
    if len(params) == 2 and len(runtime_params) == 1:
        runtime_name = runtime_params[0]
        config_name = next(p.name for p in params if p.name != runtime_name)
        return lambda config, runtime: {runtime_name: runtime, config_name: config}
    raise InvalidInput(
        f"graph {graph_id!r}: a graph factory takes no argument, the config, a ServerRuntime, or the "
        "config and a ServerRuntime (annotated `runtime: ServerRuntime`); "
        f"got ({', '.join(p.name for p in params)})"
    )
