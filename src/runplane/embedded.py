"""runplane as a library: the whole runtime opened inside an existing application.

    async with runplane.open(database_url="sqlite:///app.db", graphs={"agent": graph}) as rp:
        run = await rp.runs.create(thread_id, "agent", user=user_id, input=..., if_not_exists="create")

`open` composes exactly what `runplane serve` composes (`runplane.host.compose`): the store, the bus,
LangGraph's checkpointer and store, the graphs and the in-process workers. Closing drains the workers
(running runs get `shutdown_grace` seconds, then go back to the queue for the next process).

A host web application mounts the LangGraph-compatible API with `rp.asgi_app()` and opens the runtime
in its own lifespan (`rp.lifespan`); its own routes call `rp.runs` and `rp.threads`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from langgraph_sdk.auth import Auth
from langgraph_sdk.auth.exceptions import HTTPException as AuthHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from runplane.api.app import ApiSettings, create_app
from runplane.api.errors import error_response
from runplane.core.clock import Clock
from runplane.core.manager import RunManager
from runplane.facade import Runs, Threads
from runplane.host import Services, compose
from runplane.runtime.graphs import LangGraphRuntime
from runplane.settings import Settings
from runplane.stores import DEFAULT_DATABASE_URL
from runplane.worker import Worker

#: The host application's authentication: the request's user identity, or None to refuse it (401).
Authenticate = Callable[[Request], str | Awaitable[str | None] | None]


class Runplane:
    """The runtime of one process: open it (`async with`), use `runs` and `threads`, mount
    `asgi_app()`. Build it with `runplane.open(...)`.

    Args:
        settings: what to open (database, bus, workers, lease knobs, langgraph.json).
        graphs: graph id -> compiled graph, `StateGraph` or factory (instead of a langgraph.json).
        clock: time source of the store and manager (`runplane.testing.FakeClock` in tests).
        burst: build the worker without starting it; `run_until_idle()` executes what is queued.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        graphs: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        burst: bool = False,
    ) -> None:
        self.settings = settings
        self._graphs = dict(graphs) if graphs is not None else None
        self._clock = clock
        self._burst = burst
        self._stack: contextlib.AsyncExitStack | None = None
        self._services: Services | None = None
        self._runs: Runs | None = None
        self._threads: Threads | None = None

    def __repr__(self) -> str:
        state = "open" if self._services is not None else "closed"
        return f"<Runplane {state} workers={self.settings.workers} burst={self._burst}>"

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> Runplane:
        """Open everything (migrating the database); returns self.

        Raises:
            RuntimeError: already open.
            InvalidInput: a URL, the langgraph.json or a graph is invalid.
        """
        if self._stack is not None:
            raise RuntimeError("this Runplane is already open")
        stack = contextlib.AsyncExitStack()
        try:
            services = await stack.enter_async_context(
                compose(
                    self.settings,
                    with_workers=True,
                    graphs=self._graphs,
                    clock=self._clock,
                    burst=self._burst,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._services = stack, services
        self._runs = Runs(services.manager, services.runtime)
        self._threads = Threads(services.manager, services.runtime)
        return self

    async def close(self) -> None:
        """Stop claiming runs, drain the running ones for `shutdown_grace`, hand the rest back to the
        queue, and close the database and bus. Idempotent."""
        stack, self._stack = self._stack, None
        self._services = self._runs = self._threads = None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> Runplane:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """A Starlette / FastAPI lifespan: `FastAPI(lifespan=rp.lifespan)`. Call it inside the host's
        own lifespan (`async with rp.lifespan(app): yield`) when it has one."""
        async with self:
            yield

    # -- parts --------------------------------------------------------------------------------------

    @property
    def services(self) -> Services:
        """The composed parts (manager, runtime, worker, the langgraph.json's auth).

        Raises:
            RuntimeError: not open.
        """
        if self._services is None:
            raise RuntimeError("runplane is not open: use `async with runplane.open(...)` first")
        return self._services

    @property
    def manager(self) -> RunManager:
        """The `RunManager` (user-agnostic primitives; prefer `runs` and `threads`)."""
        return self.services.manager

    @property
    def runtime(self) -> LangGraphRuntime:
        """The graphs and their checkpointer."""
        return self.services.runtime

    @property
    def worker(self) -> Worker | None:
        """The in-process worker (None with `workers=0`)."""
        return self.services.worker

    @property
    def runs(self) -> Runs:
        """Runs, each call with the caller's identity (`user=`)."""
        self.services  # noqa: B018 - raises when closed
        assert self._runs is not None
        return self._runs

    @property
    def threads(self) -> Threads:
        """Threads and their checkpointed state, each call with the caller's identity (`user=`)."""
        self.services  # noqa: B018 - raises when closed
        assert self._threads is not None
        return self._threads

    async def run_until_idle(self) -> None:
        """Burst mode (tests, scripts): execute every claimable run, then return.

        Raises:
            RuntimeError: not open, or opened with `workers=0`.
        """
        if self.worker is None:
            raise RuntimeError("run_until_idle needs a worker: open with workers >= 1")
        await self.worker.run_until_idle()

    # -- HTTP ---------------------------------------------------------------------------------------

    def asgi_app(
        self,
        *,
        authenticate: Authenticate | None = None,
        api_settings: ApiSettings | None = None,
    ) -> ASGIApp:
        """The LangGraph-compatible API, to mount: `app.mount("/agents", rp.asgi_app())`. Callable
        before `open()` (the routes of a module-level app are declared first); requests before
        the runtime is open, or after it closed, get 503.

        Args:
            authenticate: the host application's authentication, given the request: returns the
                user's identity (the `user` of `runs` and `threads`: each user sees only their own
                threads), or None to refuse the request with 401. May be async. None: no
                authentication (or the langgraph.json's `auth`, if it declares one).
            api_settings: the API's HTTP knobs (body limits, CORS, heartbeats, API keys).

        Raises:
            ValueError: `authenticate` together with API keys or custom auth in `api_settings`.
        """
        settings = api_settings or ApiSettings()
        if authenticate is not None:
            if settings.api_keys is not None or settings.custom_auth is not None:
                raise ValueError("pass authenticate, or API keys / custom auth in api_settings, not both")
            settings = _with_auth(settings, delegated_auth(authenticate))
        return _MountedApi(self, settings)

    def build_api(self, settings: ApiSettings | None = None) -> ASGIApp:
        """The API application over the open runtime (what `asgi_app` serves once open).

        Raises:
            RuntimeError: not open.
            ValueError, InvalidInput: see `runplane.api.app.create_app`.
        """
        services = self.services
        settings = settings or ApiSettings()
        if settings.custom_auth is None and settings.api_keys is None and services.auth is not None:
            settings = _with_auth(settings, services.auth)
        return create_app(services.manager, services.runtime, settings)


def _with_auth(settings: ApiSettings, auth: Auth) -> ApiSettings:
    return dataclasses.replace(settings, custom_auth=auth)


def delegated_auth(authenticate: Authenticate) -> Auth:
    """A `langgraph_sdk.Auth` whose `@auth.authenticate` asks the host application who is calling;
    without `@auth.on` handlers, every user reaches only the threads and runs they own."""
    auth = Auth()

    async def identify(request: Request) -> str:
        identity = authenticate(request)
        if inspect.isawaitable(identity):
            identity = await identity
        if not isinstance(identity, str):
            raise AuthHTTPException(status_code=401, detail="Unauthorized")
        return identity

    auth.authenticate(identify)
    return auth


class _MountedApi:
    """The API, built on the first request after the runtime opened; 503 while it is closed. Also
    answers ASGI lifespan itself, opening and closing the runtime, when served on its own."""

    def __init__(self, runplane: Runplane, settings: ApiSettings) -> None:
        self.runplane = runplane
        self.settings = settings
        self._app: ASGIApp | None = None
        self._built_for: Services | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        services = self.runplane._services
        if services is None:
            await error_response(503, "The agent runtime is not running")(scope, receive, send)
            return
        if self._app is None or self._built_for is not services:  # reopened: new manager, new app
            self._app = self.runplane.build_api(self.settings)
            self._built_for = services
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runplane.open()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runplane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def open(
    database_url: str = DEFAULT_DATABASE_URL,
    *,
    graphs: Mapping[str, Any] | None = None,
    config: str | None = None,
    workers: int = 4,
    redis_url: str | None = None,
    lease_seconds: float = 30.0,
    max_attempts: int = 3,
    default_timeout: float | None = None,
    shutdown_grace: float = 10.0,
    clock: Clock | None = None,
    burst: bool = False,
) -> Runplane:
    """The runplane runtime for this process, to open with `async with` (or `rp.lifespan`).

    Args:
        database_url: `sqlite:///path.db` (default `./runplane.db`), `postgresql://...`, or
            `memory://` (nothing survives the process). Several processes may share a SQLite file
            or a PostgreSQL database: admission, cancels and leases are decided in the database.
        graphs: graph id -> compiled graph, `StateGraph` or factory. Exclusive with `config`.
        config: a langgraph.json (graphs, env, auth, store, checkpointer TTL), as `runplane serve`
            reads it. Neither: ./langgraph.json when present, else the demo graphs.
        workers: runs this process executes at once (0: none; a `runplane worker` process on the
            same database executes them).
        redis_url: share event streams through Redis (PostgreSQL shares them by itself).
        lease_seconds: how long a claim lasts without a heartbeat: after the host process dies, its
            runs are resumed by another process (or this one, restarted) about this long after.
        max_attempts: claims of one run before a run whose workers keep dying ends `error`.
        default_timeout: seconds before a run without its own timeout ends `timeout`.
        shutdown_grace: seconds `close()` lets running runs finish before handing them back.
        clock: time source (`runplane.testing.FakeClock`).
        burst: do not start the worker; `await rp.run_until_idle()` runs what is queued (tests).

    Raises:
        InvalidInput: an invalid URL or setting.
    """
    settings = Settings().with_overrides(
        database_url=database_url,
        config=config,
        workers=workers,
        redis_url=redis_url,
        lease_seconds=lease_seconds,
        max_attempts=max_attempts,
        default_timeout=default_timeout,
        shutdown_grace=shutdown_grace,
    )
    return Runplane(settings, graphs=graphs, clock=clock, burst=burst)
