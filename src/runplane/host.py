"""The composition root: opens the store, bus, LangGraph checkpointer and store, graphs and workers,
and closes them in reverse. The CLI (`runplane dev | serve | worker`) composes through it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import click
from langgraph_sdk.auth import Auth

from runplane.core.errors import InvalidInput
from runplane.core.manager import ManagerSettings, RunManager
from runplane.events import open_bus
from runplane.runtime import checkpoint_ttl
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime, load_module_file, load_runtime
from runplane.runtime.langgraph_store import open_langgraph_store, store_settings
from runplane.runtime.project import read_project
from runplane.settings import Settings
from runplane.stores import open_store, scheme_of
from runplane.worker import Worker


@dataclass
class Services:
    manager: RunManager
    runtime: LangGraphRuntime
    worker: Worker | None
    #: The langgraph.json's custom auth (a `langgraph_sdk.Auth`), if it declares one.
    auth: Auth | None = None


def resolve_config(config: str | None) -> str | None:
    """The langgraph.json to load: the given one, else ./langgraph.json if present, else None (demos)."""
    if config is not None:
        if not Path(config).is_file():
            raise click.UsageError(f"config file {config!r} does not exist")
        return config
    return "langgraph.json" if Path("langgraph.json").is_file() else None


@contextlib.asynccontextmanager
async def compose(settings: Settings, *, with_workers: bool) -> AsyncIterator[Services]:
    """Open the store, bus, LangGraph checkpointer and store, graphs and (optionally) workers; close
    them in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(settings.database_url)
        await store.open()
        stack.push_async_callback(store.close)
        bus = open_bus(bus_url(settings))
        stack.push_async_callback(bus.close)
        manager = RunManager(
            store,
            bus,
            settings=ManagerSettings(
                lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts
            ),
        )
        config_path = resolve_config(settings.config)
        project = read_project(config_path)  # applies its env: before anything of the project loads
        checkpointer = await stack.enter_async_context(open_checkpointer(settings.database_url))
        await stack.enter_async_context(checkpoint_ttl.sweeping(checkpointer, project.checkpointer_ttl))
        graph_store = await stack.enter_async_context(
            open_langgraph_store(settings.database_url, store_settings(project))
        )
        runtime = load_runtime(project, checkpointer, store=graph_store)
        # After the graphs: their `env` and `dependencies` are what the auth module may need too.
        auth = load_custom_auth(config_path)
        worker = None
        if with_workers and settings.workers > 0:
            worker = Worker(
                manager,
                runtime,
                concurrency=settings.workers,
                default_timeout=settings.default_timeout,
                shutdown_grace=settings.shutdown_grace,
            )
            await worker.start()
            stack.push_async_callback(worker.stop)
        yield Services(manager, runtime, worker, auth)


def declared_auth(config_path: str | None) -> str | None:
    """The `auth.path` a langgraph.json declares (e.g. `./auth.py:auth`), without loading it."""
    if config_path is None:
        return None
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError):
        return None  # load_runtime reports it
    section = config.get("auth") if isinstance(config, dict) else None
    target = section.get("path") if isinstance(section, dict) else None
    return target if isinstance(target, str) and target else None


def load_custom_auth(config_path: str | None) -> Auth | None:
    """The `langgraph_sdk.Auth` object named by a langgraph.json's `auth.path`, loaded as LangGraph's
    server does (a file relative to the json's directory, or a module on the path).

    Raises:
        InvalidInput: the path is malformed, fails to import, or names something else.
    """
    target = declared_auth(config_path)
    if target is None or config_path is None:
        return None
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        raise InvalidInput(
            f"auth.path must be './file.py:variable' or 'package.module:variable', got {target!r}"
        )
    base_dir = Path(config_path).resolve().parent
    try:
        if "/" in source or "\\" in source or source.endswith(".py"):
            module = load_module_file(base_dir / source)
        else:
            module = importlib.import_module(source)
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(
            f"auth.path {target!r}: importing {source} failed: {type(exc).__name__}: {exc}"
        ) from exc
    auth = getattr(module, attr, None)
    if not isinstance(auth, Auth):
        raise InvalidInput(f"auth.path {target!r} is a {type(auth).__name__}, not a langgraph_sdk.Auth")
    return auth


def bus_url(settings: Settings) -> str:
    """Redis when given; else a PostgreSQL database doubles as the bus (LISTEN/NOTIFY), so several
    processes on one database share streams and hints; else the in-process bus."""
    if settings.redis_url:
        return settings.redis_url
    if scheme_of(settings.database_url) in ("postgres", "postgresql"):
        return settings.database_url
    return "memory://"
