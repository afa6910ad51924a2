"""`runplane` command line. It composes through `runplane.host` (via `runplane.embedded.Runplane`),
as applications embedding runplane do: one composition path.

runplane dev          API + workers on embedded SQLite in ./, ./langgraph.json or the demo graphs
runplane serve        the same, configured for production (any database, optional Redis)
runplane worker       workers only, sharing a PostgreSQL (or SQLite) database with API processes
runplane migrate      apply database migrations
runplane threads ...  inspect a running server
runplane runs ...     inspect, cancel and follow runs on a running server
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import signal
import socket
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args, get_origin

import click
import uvicorn

from runplane._version import VERSION
from runplane.api.app import create_app
from runplane.api.auth import load_api_keys_file, parse_api_keys
from runplane.api.http_config import parse_http_section
from runplane.api.metrics import metrics_app
from runplane.api.origins import origin_problem
from runplane.api.server import run_server
from runplane.api.settings import HttpConfig
from runplane.cli_inspect import doctor_command, runs, threads
from runplane.core.errors import InvalidInput, RunplaneError
from runplane.embedded import Runplane
from runplane.host import Services, api_settings, declared_auth, resolve_config, server_limits
from runplane.host import bus_url as bus_url
from runplane.host import load_custom_auth as load_custom_auth
from runplane.logs import configure_logging
from runplane.runtime.http_app import http_section, load_http_app
from runplane.settings import Settings, settings_from_env, variable
from runplane.settings import redact as redact
from runplane.stores import open_store

# -- composition --------------------------------------------------------------------------------


def api_keys_of(settings: Settings) -> dict[str, str] | None:
    """The configured API keys (`RUNPLANE_API_KEYS` and `RUNPLANE_API_KEYS_FILE` together), or None."""
    keys: dict[str, str] = {}
    try:
        if settings.api_keys:
            keys.update(parse_api_keys(settings.api_keys))
        if settings.api_keys_file:
            keys.update(load_api_keys_file(settings.api_keys_file))
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None
    return keys or None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name could resolve anywhere


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback when nobody is authenticated, unless told it is on purpose."""
    if is_loopback(settings.host) or settings.insecure_allow_no_auth:
        return
    if api_keys_of(settings) or declared_auth(resolve_config(settings.config)):
        return
    raise click.UsageError(
        f"refusing to listen on {settings.host} without authentication: anyone who can reach it could "
        "run your graphs and read every thread. Set RUNPLANE_API_KEYS=key:user,... (or "
        'RUNPLANE_API_KEYS_FILE), declare "auth" in langgraph.json, or pass --insecure-allow-no-auth '
        "(RUNPLANE_INSECURE_ALLOW_NO_AUTH=1) if a proxy in front of runplane authenticates."
    )


def check_port_free(host: str, port: int) -> None:
    """Fail early, and clearly, when the port is taken (uvicorn's own message is easy to miss)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is busy; choose another with --port or RUNPLANE_PORT"
                ) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def cors_origins_of(settings: Settings) -> tuple[str, ...]:
    """The origins of `--cors-origins` / `RUNPLANE_CORS_ORIGINS` (comma-separated), checked."""
    origins = tuple(o.strip() for o in (settings.cors_origins or "").split(",") if o.strip())
    for origin in origins:
        problem = origin_problem(origin)
        if problem is not None:
            raise click.UsageError(f"--cors-origins: {problem}")
    return origins


def http_config_of(config_path: str | None) -> HttpConfig:
    """The langgraph.json's `http` section, with the custom app it names loaded (after the graphs)."""
    try:
        section = http_section(config_path)
        target = section.get("app") if isinstance(section, dict) else None
        app = load_http_app(target, config_path) if isinstance(target, str) and config_path else None
        return parse_http_section(section, app=app, source=config_path or "langgraph.json")
    except InvalidInput as exc:
        raise click.UsageError(exc.message) from None


async def serve_api(
    settings: Settings, *, banner: Callable[[], None] | None = None, dev: bool = False
) -> None:
    async with Runplane(settings) as runplane:
        services = runplane.services
        api = api_settings(
            settings,
            api_keys=api_keys_of(settings),
            custom_auth=services.auth,
            cors_origins=cors_origins_of(settings),
            # `langgraph dev` users open their front end on localhost:<port> and expect it to work.
            cors_allow_loopback=dev and is_loopback(settings.host),
            http=http_config_of(resolve_config(settings.config)),
            metrics=services.metrics,
        )
        try:
            app = create_app(services.manager, services.runtime, api)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        except InvalidInput as exc:
            raise click.UsageError(exc.message) from None
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            lifespan="on",
            access_log=False,
            **server_limits(settings),  # header-read and keep-alive timeouts, connection cap
        )
        server = uvicorn.Server(config)
        if banner is not None:
            banner()
        await server.serve()


async def run_worker(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Runplane(settings) as runplane:
        services = runplane.services
        click.echo(f"runplane worker: {services.worker!r} on {redact(settings.database_url)}", err=True)
        metrics_server = serve_worker_metrics(settings, services)
        await stop.wait()
        if metrics_server is not None:
            await metrics_server.stop()
        # Leaving the context stops claiming, drains for shutdown_grace, then hands runs back.


class _MetricsServer:
    """`/metrics` of a worker-only process, served by uvicorn beside the workers."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.task = asyncio.create_task(server.serve())

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


def serve_worker_metrics(settings: Settings, services: Services) -> _MetricsServer | None:
    """Serve `/metrics` on `settings.metrics_port` (0: not at all), behind the API keys unless
    `metrics_public`: a worker process has no API, but its counters are its own."""
    if not settings.metrics_port or services.metrics is None:
        return None
    check_port_free(settings.host, settings.metrics_port)
    app = metrics_app(
        services.metrics, services.manager, api_keys=api_keys_of(settings), public=settings.metrics_public
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.metrics_port, log_config=None, lifespan="off", access_log=False
    )
    return _MetricsServer(uvicorn.Server(config))


# -- commands ------------------------------------------------------------------------------------


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """The `RUNPLANE_*` variables of `environ` (the process's when None), overridden by the flags given.

    Raises:
        click.UsageError: a value is invalid, or the langgraph.json does not exist.
    """
    try:
        settings = settings_from_env(environ).with_overrides(**overrides)
        resolve_config(settings.config)  # a missing langgraph.json is a usage error, said at once
        return settings
    except RunplaneError as exc:
        raise click.UsageError(exc.message) from None


def _click_type(annotation: Any) -> Any:
    """The click type of a setting's annotation (`int | None` -> int; a Literal -> a Choice)."""
    if isinstance(annotation, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    if get_origin(annotation) is Literal:
        return click.Choice(get_args(annotation))
    return annotation if annotation in (int, float) else str


def setting_option(name: str, *aliases: str) -> Callable[[Any], Any]:
    """The flag of a setting (`lease_seconds` -> `--lease-seconds`), its help from the setting's own
    description, naming the variable it overrides and its default."""
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    default = "unset" if field.default is None else repr(field.default).strip("'")
    help_text = f"{field.description} [{variable(name)}; default: {default}]"
    if field.annotation is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    return click.option(flag, *aliases, name, type=_click_type(field.annotation), help=help_text)


#: The flags of `dev` and `serve`: what people set often. Every setting also has its variable.
server_options = [
    setting_option(name)
    for name in (
        "database_url",
        "redis_url",
        "host",
        "port",
        "workers",
        "config",
        "log_level",
        "cors_origins",
        "api_keys_file",
        "insecure_allow_no_auth",
        "webhook_allow_hosts",
        "lease_seconds",
        "max_attempts",
        "default_timeout",
        "shutdown_grace",
        "default_on_disconnect",
        "max_wait_seconds",
        "max_body_bytes",
        "docs",
        "ui",
    )
]


#: Operators' options (logs and metrics), on every serving command.
ops_options = [setting_option("log_format"), setting_option("metrics_public")]

#: The flags of `runplane worker`.
worker_options = [
    *(setting_option(name) for name in ("database_url", "redis_url")),
    setting_option("workers", "--concurrency"),
    *(
        setting_option(name)
        for name in (
            "config",
            "log_level",
            "metrics_port",
            "webhook_allow_hosts",
            "lease_seconds",
            "max_attempts",
            "default_timeout",
            "shutdown_grace",
        )
    ),
]


def with_options(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(version=VERSION, package_name="runplane")
def main() -> None:
    """runplane: a durable run manager and LangGraph-compatible server for agent runs.

    Every option can also be set as RUNPLANE_<OPTION> (e.g. RUNPLANE_DATABASE_URL, RUNPLANE_PORT); a
    flag wins over its variable. docs/settings.md lists every setting, flags or not.
    """


@main.command()
@with_options(server_options)
@with_options(ops_options)
def dev(**options: Any) -> None:
    """Serve on embedded SQLite in this directory with in-process workers: zero setup.

    Loads ./langgraph.json when present, else the built-in demo graphs (echo, chat, slow, hitl).
    Webhooks may call loopback addresses (a receiver on this machine).
    """
    settings = load_settings(**options, webhook_allow_loopback=True)
    configure_logging(settings.log_level, settings.log_format)
    check_exposure(settings)
    check_port_free(settings.host, settings.port)
    url = f"http://{settings.host}:{settings.port}"

    def banner() -> None:
        source = resolve_config(settings.config) or "built-in demo graphs"
        click.echo(
            f"\n  runplane dev  {url}   (database {redact(settings.database_url)}, graphs: {source})\n"
            f"  API docs: {url}/docs\n"
            f"  Dashboard: {url}/ui   metrics: {url}/metrics\n\n"
            "  Try it:\n"
            "    from langgraph_sdk import get_sync_client\n"
            f'    client = get_sync_client(url="{url}")\n'
            "    thread = client.threads.create()\n"
            '    print(client.runs.wait(thread["thread_id"], "echo", input={"messages": [{"role": "user", '
            '"content": "hi"}]}))\n',
            err=True,
        )

    run_server(serve_api(settings, banner=banner, dev=True), settings.event_loop)


@main.command()
@with_options(server_options)
@with_options(ops_options)
def serve(**options: Any) -> None:
    """Serve the API (and --workers in-process workers) on any database."""
    settings = load_settings(**options)
    configure_logging(settings.log_level, settings.log_format)
    check_exposure(settings)
    check_port_free(settings.host, settings.port)
    run_server(serve_api(settings), settings.event_loop)


@main.command()
@with_options(worker_options)
@with_options(ops_options)
def worker(**options: Any) -> None:
    """Execute runs only (no HTTP); run as many as you like against one database."""
    settings = load_settings(**options)
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings))


@main.command()
@with_options([setting_option("database_url")])
def migrate(**options: Any) -> None:
    """Apply pending database migrations (servers also do this on start)."""
    settings = load_settings(**options)

    async def apply() -> None:
        store = open_store(settings.database_url)
        await store.open()  # open() migrates
        await store.close()

    asyncio.run(apply())
    click.echo(f"migrated {redact(settings.database_url)}")


# -- operators' commands (runplane.cli_inspect) ----------------------------------------------------

main.add_command(threads)
main.add_command(runs)
main.add_command(doctor_command(redact))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
