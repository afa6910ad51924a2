"""The composition root: opens the store, bus, LangGraph checkpointer and store, graphs and workers,
and closes them in reverse. The one way runplane is assembled: the CLI (`runplane dev | serve |
worker`) and applications embedding runplane (`runplane.open`, `runplane.embedded`) both compose here.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langgraph.graph import StateGraph
from langgraph_sdk.auth import Auth

from runplane.api.metrics import PrometheusMetrics
from runplane.api.server import http_limits
from runplane.api.settings import ApiSettings
from runplane.core.clock import Clock
from runplane.core.errors import InvalidInput
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.observe import observed
from runplane.core.webhooks import AddressPolicy
from runplane.events import open_bus
from runplane.runtime import checkpoint_ttl
from runplane.runtime.checkpointer import open_checkpointer
from runplane.runtime.graphs import LangGraphRuntime, load_runtime
from runplane.runtime.items import LangGraphItems
from runplane.runtime.langgraph_store import open_langgraph_store, store_settings
from runplane.runtime.project import import_source, read_project
from runplane.settings import Settings
from runplane.stores import open_store, scheme_of
from runplane.worker import Worker
from runplane.worker.scheduler import CroniterSchedule, Scheduler
from runplane.worker.sweeper import Sweeper
from runplane.worker.webhooks import WebhookDispatcher, WebhookGuard


@dataclass
class Services:
    manager: RunManager
    runtime: LangGraphRuntime
    worker: Worker | None
    #: The langgraph.json's custom auth (a `langgraph_sdk.Auth`), if it declares one.
    auth: Auth | None = None
    #: This process's Prometheus metrics (the manager and workers report to it).
    metrics: PrometheusMetrics | None = None


def resolve_config(config: str | None) -> str | None:
    """The langgraph.json to load: the given one, else ./langgraph.json if present, else None (demos).

    Raises:
        InvalidInput: the given file does not exist.
    """
    if config is not None:
        if not Path(config).is_file():
            raise InvalidInput(f"config file {config!r} does not exist")
        return config
    return "langgraph.json" if Path("langgraph.json").is_file() else None


@contextlib.asynccontextmanager
async def compose(
    settings: Settings,
    *,
    with_workers: bool,
    graphs: Mapping[str, Any] | None = None,
    clock: Clock | None = None,
    burst: bool = False,
) -> AsyncIterator[Services]:
    """Open the store, bus, LangGraph checkpointer and store, graphs and (optionally) workers; close
    them in reverse.

    Args:
        settings: the process settings (database, bus, workers, langgraph.json, lease knobs).
        with_workers: start `settings.workers` in-process workers (none when it is 0).
        graphs: graph id -> compiled graph, `StateGraph` or factory, served instead of a langgraph.json
            (an embedding application's own graphs); exclusive with `settings.config`.
        clock: the time source of the store and manager (a `FakeClock` in tests).
        burst: build the worker but do not start it: the caller drives it with `run_until_idle()`.

    Raises:
        InvalidInput: both `graphs` and a config are given, or the config, a graph or a URL is invalid.
    """
    if graphs is not None and settings.config is not None:
        raise InvalidInput("pass graphs or a langgraph.json config, not both")
    async with contextlib.AsyncExitStack() as stack:
        store = open_store(database_url(settings), clock=clock)
        await store.open()
        stack.push_async_callback(store.close)
        bus = open_bus(bus_url(settings))
        stack.push_async_callback(bus.close)
        metrics = PrometheusMetrics()
        manager = RunManager(
            observed(store, metrics),
            bus,
            clock=clock,
            observer=metrics,
            settings=manager_settings(settings),
            schedule=CroniterSchedule(),
            url_guard=webhook_guard(settings),
        )
        config_path = resolve_config(settings.config) if graphs is None else None
        # Applies its env: before anything of the project loads. Given graphs need no project.
        project = read_project(config_path) if graphs is None else None
        checkpointer = await stack.enter_async_context(open_checkpointer(database_url(settings)))
        await stack.enter_async_context(
            checkpoint_ttl.sweeping(checkpointer, project.checkpointer_ttl if project else None)
        )
        graph_store = await stack.enter_async_context(
            open_langgraph_store(database_url(settings), store_settings(project))
        )
        runtime = (
            load_runtime(project, checkpointer, store=graph_store)
            if project is not None
            else graphs_runtime(graphs or {}, checkpointer, graph_store)
        )
        manager.attach_items(LangGraphItems(graph_store))
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
                heartbeat_seconds=settings.lease_renew_seconds,
                recovery_interval=settings.recovery_seconds,
                poll_interval=settings.poll_seconds,
                claim_retry_seconds=settings.claim_retry_seconds,
            )
            if not burst:
                await worker.start()
                stack.push_async_callback(worker.stop)
                await start_background_loops(stack, manager, runtime, settings)
        yield Services(manager, runtime, worker, auth, metrics)


# -- Settings -> the components' parameters (the one place they are mapped) ---------------------


def manager_settings(settings: Settings) -> ManagerSettings:
    return ManagerSettings(
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        wait_fallback_seconds=settings.wait_fallback_seconds,
        webhook_lease_seconds=settings.webhook_lease_seconds,
    )


def api_settings(settings: Settings, **resolved: Any) -> ApiSettings:
    """The API's knobs from the process settings; `resolved` adds what the caller loaded from them
    (API keys, custom auth, CORS origins, the langgraph.json `http` section, metrics)."""
    return ApiSettings(
        max_body_bytes=settings.max_body_bytes,
        heartbeat_seconds=settings.heartbeat_seconds,
        default_on_disconnect=settings.default_on_disconnect,
        docs=settings.docs,
        max_wait_seconds=settings.max_wait_seconds,
        max_json_depth=settings.max_json_depth,
        max_header_bytes=settings.max_header_bytes,
        metrics_public=settings.metrics_public,
        ui=settings.ui,
        **resolved,
    )


def server_limits(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments: header-read and keep-alive timeouts, connection cap."""
    return http_limits(
        header_timeout=settings.http_header_timeout,
        keepalive_timeout=settings.http_keepalive_timeout,
        max_connections=settings.http_max_connections,
        parser=settings.http_parser,
    )


def database_url(settings: Settings) -> str:
    """The database URL with `RUNPLANE_POOL_*` as its pool parameters (they win over the URL's): the
    store, the checkpointer and the bus all read a PostgreSQL pool's settings from the URL."""
    given = {
        "pool_min_size": settings.pool_min_size,
        "pool_max_size": settings.pool_max_size,
        "pool_timeout": settings.pool_timeout,
    }
    pool = {name: str(value) for name, value in given.items() if value is not None}
    url = settings.database_url
    if not pool or scheme_of(url) not in ("postgres", "postgresql"):
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in pool]
    return urlunsplit(parts._replace(query=urlencode([*query, *pool.items()])))


def webhook_guard(settings: Settings) -> WebhookGuard:
    return WebhookGuard(
        AddressPolicy.parse(settings.webhook_allow_hosts, allow_loopback=settings.webhook_allow_loopback)
    )


async def start_background_loops(
    stack: contextlib.AsyncExitStack, manager: RunManager, runtime: LangGraphRuntime, settings: Settings
) -> None:
    """The cron scheduler, the webhook dispatcher and the TTL sweeper, beside the workers of this
    process (every process may run them: the database makes each slot fire once, each delivery be
    claimed once, and each expired thread be deleted once)."""
    if not settings.webhook_secret:
        logging.getLogger("runplane.webhooks").info(
            "RUNPLANE_WEBHOOK_SECRET is not set: webhook deliveries are not signed"
        )
    for loop in background_loops(manager, runtime, settings):
        await loop.start()
        stack.push_async_callback(loop.stop)


def background_loops(
    manager: RunManager, runtime: LangGraphRuntime, settings: Settings
) -> tuple[WebhookDispatcher, Scheduler, Sweeper]:
    """The webhook dispatcher, the cron scheduler and the sweeper, with their knobs (not started)."""
    dispatcher = WebhookDispatcher(
        manager,
        webhook_guard(settings),
        secret=settings.webhook_secret,
        max_attempts=settings.webhook_max_attempts,
        base_delay=settings.webhook_retry_base_seconds,
        max_delay=settings.webhook_retry_max_seconds,
        timeout=settings.webhook_timeout_seconds,
        concurrency=settings.webhook_concurrency,
        max_redirects=settings.webhook_max_redirects,
        max_sleep=settings.webhook_poll_seconds,
    )
    scheduler = Scheduler(manager, max_sleep=settings.cron_poll_seconds)
    sweeper = Sweeper(manager, runtime, interval_seconds=settings.sweep_seconds)
    return dispatcher, scheduler, sweeper


def graphs_runtime(graphs: Mapping[str, Any], checkpointer: Any, graph_store: Any) -> LangGraphRuntime:
    """A runtime serving graphs given as Python objects (a `StateGraph` is compiled here).

    Raises:
        InvalidInput: no graphs.
    """
    if not graphs:
        raise InvalidInput("no graphs given")
    values = {
        graph_id: value.compile() if isinstance(value, StateGraph) else value
        for graph_id, value in graphs.items()
    }
    return LangGraphRuntime(values, checkpointer, store=graph_store)


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
    module = import_source(source, Path(config_path).resolve().parent, f"auth.path {target!r}")
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
