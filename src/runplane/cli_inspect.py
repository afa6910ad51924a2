"""`runplane threads ...`, `runplane runs ...` and `runplane doctor`: the operator's commands.

The inspection commands are clients of a running server through the official `langgraph-sdk`, with
the key of `--api-key` or `RUNPLANE_API_KEY` (never a LangSmith key picked up from the environment),
so they work against any runplane or LangGraph server, authenticated or not.

`doctor` checks what a server needs before it starts (configuration, database, Redis, the graphs'
imports, the port) and prints one line per check, with what to do about each problem.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_sync_client
from langgraph_sdk._sync.client import SyncLangGraphClient
from langgraph_sdk.schema import StreamPart

from runplane.core.errors import RunplaneError
from runplane.core.models import CANCEL_ACTIONS, RUN_STATUSES, THREAD_STATUSES
from runplane.runtime.graphs import load_runtime
from runplane.settings import Settings, settings_from_env
from runplane.stores import open_store

DEFAULT_SERVER_URL = "http://127.0.0.1:8123"

# -- talking to a server ------------------------------------------------------------------------


def client_options(func: Any) -> Any:
    """--url, --api-key and --json, shared by every inspection command."""
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(func)
    func = click.option(
        "--api-key",
        default=lambda: os.environ.get("RUNPLANE_API_KEY") or None,
        show_default="RUNPLANE_API_KEY",
        help="The API key the server expects (sent as x-api-key).",
    )(func)
    return click.option(
        "--url",
        default=lambda: os.environ.get("RUNPLANE_URL", DEFAULT_SERVER_URL),
        show_default="RUNPLANE_URL or " + DEFAULT_SERVER_URL,
        help="The runplane (or LangGraph) server.",
    )(func)


def _client(url: str, api_key: str | None) -> SyncLangGraphClient:
    # api_key=None tells the SDK not to fall back on LANGSMITH_API_KEY & co: those are not for us.
    return get_sync_client(url=url, api_key=api_key or None)


@contextmanager
def _talking_to(url: str, api_key: str | None) -> Iterator[None]:
    """Turn the SDK's transport and HTTP errors into one line a person can act on."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        response = exc.response
        detail = response.reason_phrase
        try:
            body = response.json()
            detail = body.get("detail") or body.get("message") or detail
        except (ValueError, AttributeError):
            pass
        hint = ""
        if response.status_code == 401:
            hint = (
                " (set RUNPLANE_API_KEY or pass --api-key)"
                if not api_key
                else " (the server refused this key: check RUNPLANE_API_KEY / --api-key)"
            )
        raise click.ClickException(f"{response.status_code}: {detail}{hint}") from None
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value)[:40]
    text = str(value)
    return text[:19].replace("T", " ") if text[:4].isdigit() and "T" in text[:11] else text


def emit(data: Any, as_json: bool, columns: list[str] | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    elif isinstance(data, list):
        print_table(data, columns or [])
    else:
        for key, value in data.items():
            shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
            click.echo(f"{key:>20}: {shown}")


# -- threads --------------------------------------------------------------------------------------


@click.group()
def threads() -> None:
    """Inspect threads on a running server."""


@threads.command("ls")
@client_options
@click.option("--limit", default=20, show_default=True)
@click.option("--status", type=click.Choice(list(THREAD_STATUSES)))
def threads_ls(url: str, api_key: str | None, as_json: bool, limit: int, status: str | None) -> None:
    """List the most recent threads."""
    with _talking_to(url, api_key), _client(url, api_key) as client:
        rows = client.threads.search(limit=limit, status=status)  # type: ignore[arg-type]
    emit(rows, as_json, ["thread_id", "status", "created_at", "updated_at"])


@threads.command("show")
@client_options
@click.argument("thread_id")
def threads_show(url: str, api_key: str | None, as_json: bool, thread_id: str) -> None:
    """Show a thread, its state values and its recent runs."""
    with _talking_to(url, api_key), _client(url, api_key) as client:
        thread = client.threads.get(thread_id)
        recent = [] if as_json else client.runs.list(thread_id, limit=10)
    emit(thread, as_json)
    if not as_json:
        click.echo("\nruns:")
        print_table([dict(run) for run in recent], ["run_id", "status", "assistant_id", "created_at"])


# -- runs -----------------------------------------------------------------------------------------


@click.group()
def runs() -> None:
    """Inspect, cancel and follow runs on a running server."""


@runs.command("ls")
@client_options
@click.argument("thread_id")
@click.option("--limit", default=20, show_default=True)
@click.option("--status", type=click.Choice(list(RUN_STATUSES)))
def runs_ls(
    url: str, api_key: str | None, as_json: bool, thread_id: str, limit: int, status: str | None
) -> None:
    """List a thread's runs, newest first."""
    with _talking_to(url, api_key), _client(url, api_key) as client:
        rows = client.runs.list(thread_id, limit=limit, status=status)  # type: ignore[arg-type]
    emit(rows, as_json, ["run_id", "status", "multitask_strategy", "created_at", "updated_at"])


@runs.command("show")
@client_options
@click.argument("thread_id")
@click.argument("run_id")
def runs_show(url: str, api_key: str | None, as_json: bool, thread_id: str, run_id: str) -> None:
    """Show one run."""
    with _talking_to(url, api_key), _client(url, api_key) as client:
        run = client.runs.get(thread_id, run_id)
    emit(run, as_json)


@runs.command("cancel")
@client_options
@click.argument("thread_id")
@click.argument("run_id")
@click.option("--action", type=click.Choice(list(CANCEL_ACTIONS)), default="interrupt", show_default=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the run has stopped.")
def runs_cancel(
    url: str, api_key: str | None, as_json: bool, thread_id: str, run_id: str, action: str, wait: bool
) -> None:
    """Cancel a run (interrupt keeps its checkpoints; rollback restores the thread and deletes it)."""
    with _talking_to(url, api_key), _client(url, api_key) as client:
        client.runs.cancel(thread_id, run_id, wait=wait, action=action)  # type: ignore[arg-type]
        if action == "rollback" and wait:
            click.echo(f"run {run_id} rolled back and deleted")
            return
        run = client.runs.get(thread_id, run_id)
    emit(run, as_json)


@runs.command("tail")
@client_options
@click.argument("thread_id")
@click.argument("run_id")
@click.option(
    "--last-event-id",
    default="-1",
    show_default=True,
    help="Resume after this event id; -1 replays the run from its first event.",
)
def runs_tail(
    url: str, api_key: str | None, as_json: bool, thread_id: str, run_id: str, last_event_id: str | None
) -> None:
    """Follow a run's events live until it ends, from its first event unless told otherwise (a join
    without `Last-Event-ID` would only hear what happens from now on, as on LangGraph's server)."""
    # No read timeout: a run may stay quiet for long (the server sends heartbeats meanwhile).
    with _talking_to(url, api_key), _client(url, api_key) as client:
        for part in client.runs.join_stream(thread_id, run_id, last_event_id=last_event_id):
            _print_event(part, as_json)


def _print_event(part: StreamPart, as_json: bool) -> None:
    """One event. The SDK joined a multi-line `data:` payload before decoding it, so the whole
    payload is printed, never its last line only."""
    if as_json:
        click.echo(json.dumps({"id": part.id, "event": part.event, "data": part.data}, default=str))
        return
    ident = f"[{part.id}] " if part.id else ""
    data = json.dumps(part.data, default=str, ensure_ascii=False)
    click.echo(f"{ident}{click.style(part.event, bold=True)} {data[:2000]}")


# -- doctor ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One check: what was checked, and the problem with what to do about it (None: fine)."""

    check: str
    problem: str | None = None
    detail: str = ""


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on, or None."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is busy (another server runs there): stop it, or choose "
                    "another port with --port or RUNPLANE_PORT"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port"
    return None


def _config_path(settings: Settings) -> str | None:
    if settings.config is not None:
        return settings.config
    return "langgraph.json" if Path("langgraph.json").is_file() else None


def check_config(settings: Settings) -> Finding:
    path = _config_path(settings)
    if path is None:
        return Finding("config", detail="no langgraph.json here: the demo graphs will be served")
    try:
        config = json.loads(Path(path).read_text())
    except OSError as exc:
        return Finding("config", f"cannot read {path}: {exc.strerror}; fix the path (--config)")
    except ValueError as exc:
        return Finding("config", f"{path} is not valid JSON ({exc}); fix the file")
    if not isinstance(config, dict) or not isinstance(config.get("graphs"), dict) or not config["graphs"]:
        return Finding("config", f'{path} declares no graphs; add "graphs": {{"name": "./file.py:graph"}}')
    return Finding("config", detail=f"{path}: {len(config['graphs'])} graph(s)")


def check_graphs(settings: Settings) -> Finding:
    try:
        runtime = load_runtime(_config_path(settings), InMemorySaver())
    except RunplaneError as exc:
        return Finding("graphs", f"{exc.message}; fix the graph module or its path in langgraph.json")
    except Exception as exc:
        return Finding("graphs", f"importing the graphs failed: {type(exc).__name__}: {exc}")
    graph_ids = sorted({a.graph_id for a in runtime.assistants()})
    return Finding("graphs", detail=", ".join(graph_ids))


async def _open_database(settings: Settings) -> None:
    store = open_store(settings.database_url)
    await store.open()
    try:
        await store.queue_stats()
    finally:
        await store.close()


def _unreachable(url: str) -> str | None:
    """Why a network database cannot be reached at all (refused, unknown host), found in seconds
    rather than after a connection pool's whole timeout; None for files and reachable servers."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        return None
    port = parts.port or 5432
    try:
        with socket.create_connection((parts.hostname, port), timeout=5):
            return None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return f"nothing answers at {parts.hostname}:{port} ({reason}); is PostgreSQL running there?"


def check_database(settings: Settings, redact: Callable[[str], str]) -> Finding:
    shown = redact(settings.database_url)
    unreachable = _unreachable(settings.database_url)
    if unreachable is not None:
        return Finding("database", f"{shown}: {unreachable} Check RUNPLANE_DATABASE_URL (host and port)")
    try:
        asyncio.run(asyncio.wait_for(_open_database(settings), timeout=15))
    except ModuleNotFoundError as exc:
        return Finding("database", f"{shown}: driver missing ({exc.name}); pip install 'runplane[postgres]'")
    except TimeoutError:
        return Finding(
            "database",
            f"{shown}: no answer within 15 s; check RUNPLANE_DATABASE_URL and that the server accepts you",
        )
    except Exception as exc:
        message = exc.message if isinstance(exc, RunplaneError) else f"{type(exc).__name__}: {exc}"
        return Finding(
            "database",
            f"{shown}: {redact(message)}; check RUNPLANE_DATABASE_URL (host, port, user, database) "
            "and that the server accepts connections",
        )
    return Finding("database", detail=f"{shown}: reachable, schema up to date")


async def _ping_redis(url: str) -> None:
    # Asked directly: the bus treats Redis hints as best effort and would swallow the failure.
    redis = importlib.import_module("redis.asyncio")
    client = redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        await client.ping()
    finally:
        await client.aclose()


def check_redis(settings: Settings, redact: Callable[[str], str]) -> Finding:
    if not settings.redis_url:
        return Finding("redis", detail="not configured (one process, or PostgreSQL's bus)")
    shown = redact(settings.redis_url)
    try:
        asyncio.run(asyncio.wait_for(_ping_redis(settings.redis_url), timeout=10))
    except ModuleNotFoundError:
        return Finding("redis", f"{shown}: redis-py missing; pip install 'runplane[redis]'")
    except Exception as exc:
        return Finding(
            "redis",
            f"{shown}: {type(exc).__name__}: {redact(str(exc))}; "
            "check RUNPLANE_REDIS_URL and that Redis runs",
        )
    return Finding("redis", detail=f"{shown}: answers PING")


def check_port(settings: Settings) -> Finding:
    problem = port_problem(settings.host, settings.port)
    return Finding("port", problem, detail=f"{settings.host}:{settings.port} is free")


def run_doctor(settings: Settings, redact: Callable[[str], str]) -> list[Finding]:
    """Every check, in the order a server needs them."""
    return [
        Finding("settings", detail="RUNPLANE_* and flags are valid"),
        check_config(settings),
        check_graphs(settings),
        check_database(settings, redact),
        check_redis(settings, redact),
        check_port(settings),
    ]


def doctor_command(redact: Callable[[str], str]) -> click.Command:
    """`runplane doctor`, built by the CLI (which owns `redact`)."""

    @click.command("doctor")
    @click.option("--database-url", help="The database to check (default RUNPLANE_DATABASE_URL).")
    @click.option("--redis-url", help="The Redis to check (default RUNPLANE_REDIS_URL).")
    @click.option("--host", help="Interface the server would listen on.")
    @click.option("--port", type=int, help="Port the server would listen on.")
    @click.option("--config", help="langgraph.json (default ./langgraph.json if present).")
    def doctor(**options: Any) -> None:
        """Check the configuration, database, Redis, the graphs' imports and the port; one line per
        check, with what to do about each problem. Exits 1 when something is wrong."""
        try:
            settings = settings_from_env().with_overrides(**options)
        except RunplaneError as exc:
            click.echo(f"{click.style('FAIL', fg='red')} settings: {exc.message}")
            raise SystemExit(1) from None
        findings = run_doctor(settings, redact)
        for finding in findings:
            if finding.problem is None:
                click.echo(f"{click.style('ok', fg='green')}   {finding.check}: {finding.detail}")
            else:
                click.echo(f"{click.style('FAIL', fg='red')} {finding.check}: {finding.problem}")
        if any(f.problem is not None for f in findings):
            raise SystemExit(1)

    return doctor
