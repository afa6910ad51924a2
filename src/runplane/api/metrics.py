"""Prometheus metrics: the `Observer` the manager and workers report to, an HTTP middleware timing
requests by route template, and the `GET /metrics` endpoint (text exposition format).

Two kinds of numbers:

- per-process counters and histograms (runs created, finished, attempts, events, HTTP requests, ...)
  count what *this* process did; every sample carries a `process` label (`host:pid` by default), so
  several processes scraped into one Prometheus never collide and `sum without (process, instance)`
  adds them up;
- the queue gauges (`runplane_queue_depth`, `runplane_active_runs`, `runplane_busy_workers`) are
  read from the database at each scrape, so every process reports the same, true value; aggregate
  them with `max`, never `sum`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runplane.api.auth import ApiKeyAuth, AuthMiddleware
from runplane.api.sse import SSE_SUBSCRIBERS_SCOPE_KEY
from runplane.core.manager import RunManager
from runplane.core.models import CancelAction, Run
from runplane.core.observe import StoreOutcome, graph_of, seconds_between

logger = logging.getLogger(__name__)

#: Runs last from milliseconds (echo) to an hour (agents with tools and humans in the loop).
RUN_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: Queue waits are short when workers are free; long ones are the signal to scale out.
WAIT_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FAST_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def default_process_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _event_family(event: str) -> str:
    """`updates|sub:1` -> `updates`: subgraph namespaces would make the label unbounded."""
    return event.partition("|")[0]


class PrometheusMetrics:
    """Every `runplane_*` family, in its own registry; implements `runplane.core.observe.Observer`.

    Args:
        process: the `process` label of this process's counters (default `host:pid`).
        registry: where the families are registered (a fresh one by default, so tests and several
            apps in one process never share counters).
    """

    def __init__(self, process: str | None = None, registry: CollectorRegistry | None = None) -> None:
        self.process = process or default_process_label()
        self.registry = registry or CollectorRegistry(auto_describe=True)
        #: (family, labels...) -> child: `.labels()` takes a lock and builds a key on every call, and
        #: the hot paths (each request, store operation and event) use a small, bounded set of them.
        self._children: dict[tuple[Any, ...], Any] = {}

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, (*labels, "process"), registry=self.registry)

        def histogram(name: str, documentation: str, buckets: tuple[float, ...], *labels: str) -> Histogram:
            return Histogram(
                name, documentation, (*labels, "process"), buckets=buckets, registry=self.registry
            )

        def database_gauge(name: str, documentation: str) -> Gauge:
            # Database-wide: no process label, every process reports the same truth.
            return Gauge(name, documentation, registry=self.registry)

        self.runs_created = counter("runplane_runs_created", "Runs admitted by this process.", "graph")
        self.runs_finished = counter(
            "runplane_runs_finished",
            "Runs that ended in this process (by a worker, or by lease recovery), by final status "
            "(`rolled_back` for a cancel with rollback, which deletes the run).",
            "graph",
            "status",
        )
        self.run_duration = histogram(
            "runplane_run_duration_seconds",
            "From a run's first start to its end, by final status.",
            RUN_SECONDS_BUCKETS,
            "graph",
            "status",
        )
        self.queue_wait = histogram(
            "runplane_run_queue_wait_seconds",
            "From a run's creation to its first start by a worker.",
            WAIT_SECONDS_BUCKETS,
            "graph",
        )
        self.attempts = counter(
            "runplane_run_attempts",
            "Attempts started by this process's workers (a run resumed after a lost worker counts again).",
            "graph",
        )
        self.recoveries = counter(
            "runplane_lease_recoveries",
            "Runs whose worker stopped renewing its lease, settled by this process, by what became of "
            "them (pending: resumed; error: out of attempts; interrupted: a cancel was pending).",
            "status",
        )
        self.cancels = counter("runplane_cancels", "Cancel requests received by this process.", "action")
        self.events = counter(
            "runplane_events_published",
            "Stream events published by this process's workers, by event name (without namespace).",
            "event",
        )
        self.sse_subscribers = Gauge(
            "runplane_sse_subscribers",
            "Open SSE run streams served by this process.",
            ("process",),
            registry=self.registry,
        )
        self.webhook_deliveries = counter(
            "runplane_webhook_deliveries",
            "Webhook deliveries attempted by this process, by outcome (ok, failed).",
            "outcome",
        )
        self.webhook_failures = counter("runplane_webhook_failures", "Webhook deliveries that failed.")
        self.cron_fires = counter("runplane_cron_fires", "Cron runs fired by this process.")
        self.store_operations = counter(
            "runplane_store_operations",
            "Store calls made by this process, by operation and outcome.",
            "operation",
            "outcome",
        )
        self.store_seconds = histogram(
            "runplane_store_operation_duration_seconds",
            "How long store calls took, by operation.",
            FAST_SECONDS_BUCKETS,
            "operation",
        )
        self.http_requests = counter(
            "runplane_http_requests",
            "HTTP requests answered by this process, by method, route template and status.",
            "method",
            "route",
            "status",
        )
        self.http_seconds = histogram(
            "runplane_http_request_duration_seconds",
            "HTTP request durations (a stream lasts as long as it streams), by method and route template.",
            FAST_SECONDS_BUCKETS,
            "method",
            "route",
        )
        self.queue_depth = database_gauge(
            "runplane_queue_depth", "Runs pending in the database (all processes)."
        )
        self.active_runs = database_gauge(
            "runplane_active_runs", "Runs running in the database (all processes)."
        )
        self.busy_workers = database_gauge(
            "runplane_busy_workers", "Workers holding at least one run (all processes)."
        )
        self.sse_subscribers.labels(self.process)
        self.cron_fires.labels(self.process)
        self.webhook_failures.labels(self.process)

    def child(self, family: Any, *labels: str) -> Any:
        """`family.labels(*labels, process)`, kept: the series of a label set never goes away."""
        key = (family, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*labels, self.process)
        return found

    # -- Observer ---------------------------------------------------------------------------------

    def run_created(self, run: Run) -> None:
        self.child(self.runs_created, graph_of(run)).inc()

    def run_started(self, run: Run) -> None:
        graph = graph_of(run)
        self.child(self.attempts, graph).inc()
        if run.attempt == 1:
            wait = seconds_between(run.not_before or run.created_at, run.started_at)
            if wait is not None:
                self.child(self.queue_wait, graph).observe(wait)

    def run_finished(self, run: Run) -> None:
        self._finished(run, run.status)

    def run_discarded(self, run: Run) -> None:
        self._finished(run, "rolled_back")

    def _finished(self, run: Run, status: str) -> None:
        graph = graph_of(run)
        self.child(self.runs_finished, graph, status).inc()
        duration = seconds_between(run.started_at, run.ended_at or run.updated_at)
        if duration is not None:
            self.child(self.run_duration, graph, status).observe(duration)

    def cancel_requested(self, action: CancelAction) -> None:
        self.child(self.cancels, action).inc()

    def lease_recovered(self, run: Run) -> None:
        self.child(self.recoveries, run.status).inc()

    def event_published(self, run: Run, event: str) -> None:
        self.child(self.events, _event_family(event)).inc()  # families: the stream modes

    def store_operation(self, operation: str, seconds: float, outcome: StoreOutcome) -> None:
        self.child(self.store_operations, operation, outcome).inc()
        self.child(self.store_seconds, operation).observe(seconds)

    def webhook_delivered(self, ok: bool) -> None:
        self.child(self.webhook_deliveries, "ok" if ok else "failed").inc()
        if not ok:
            self.child(self.webhook_failures).inc()

    def cron_fired(self) -> None:
        self.child(self.cron_fires).inc()

    # -- exposition -------------------------------------------------------------------------------

    async def refresh(self, manager: RunManager) -> None:
        """Read the database-wide gauges (at each scrape). A database that cannot answer leaves them
        as they were; the process counters are served anyway."""
        try:
            stats = await manager.queue_stats()
        except Exception:
            logger.warning("metrics: reading the queue from the database failed", exc_info=True)
            return
        self.queue_depth.set(stats.pending)
        self.active_runs.set(stats.running)
        self.busy_workers.set(stats.busy_workers)

    async def response(self, manager: RunManager) -> Response:
        await self.refresh(manager)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class HttpMetrics:
    """ASGI middleware counting and timing requests by route template (`/threads/{thread_id}`), so a
    million thread ids stay one series. Requests no route matched count as `unmatched`."""

    def __init__(self, app: ASGIApp, *, metrics: PrometheusMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[SSE_SUBSCRIBERS_SCOPE_KEY] = self.metrics.child(self.metrics.sse_subscribers)
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            m = self.metrics
            m.child(m.http_requests, method, route, str(status)).inc()
            m.child(m.http_seconds, method, route).observe(time.perf_counter() - started)


_CONVERTOR = re.compile(r"{(\w+):\w+}")


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")  # set by Starlette's router on a match
    path = getattr(route, "path", None)
    return _CONVERTOR.sub(r"{\1}", path) if isinstance(path, str) else "unmatched"


def metrics_route(metrics: PrometheusMetrics, manager: RunManager) -> Route:
    """`GET /metrics`: a plain route (no owner, no authorization rule), behind authentication
    unless `ApiSettings.metrics_public` lists it among the public paths."""

    async def serve_metrics(request: Request) -> Response:
        return await metrics.response(manager)

    return Route("/metrics", serve_metrics, methods=["GET"], name="metrics")


def metrics_app(
    metrics: PrometheusMetrics,
    manager: RunManager,
    *,
    api_keys: Mapping[str, str] | None = None,
    public: bool = False,
) -> Starlette:
    """An app serving only `/metrics`, for processes without the API (`runplane worker`): behind
    `api_keys` when given, unless `public`."""
    middleware = []
    if api_keys and not public:
        middleware.append(
            Middleware(AuthMiddleware, authenticate=ApiKeyAuth(api_keys), public_paths=frozenset())
        )
    return Starlette(routes=[metrics_route(metrics, manager)], middleware=middleware)
