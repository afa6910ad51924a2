"""`runplane dev` / `serve` as subprocesses: the demo project with an `http.app`
(`runplane/demo/langgraph_http.json`) driven by the SDK, and what a browser page on loopback meets."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_sync_client

import runplane.demo
from tests.e2e.test_cli import RUNPLANE, free_port

EXAMPLE = Path(runplane.demo.__file__).with_name("langgraph_http.json")
PAGE = "http://localhost:5173"  # a front end's dev server (Vite), as `useStream` users run it

Server = tuple[str, Callable[[], str]]


@contextmanager
def server(tmp_path: Path, *args: str) -> Iterator[Server]:
    """`runplane <args>` on a free port with an in-memory database; yields its URL and its log."""
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*RUNPLANE, *args, "--port", str(port), "--database-url", "memory://", "--workers", "2"],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/ok", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"runplane {args[0]} did not start:\n" + log_path.read_text())
                time.sleep(0.05)  # nothing to await on another process's socket
            yield url, log_path.read_text
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{url}/threads/search",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


def test_the_http_app_example(tmp_path: Path) -> None:
    with server(tmp_path, "dev", "--config", str(EXAMPLE)) as (url, _):
        hello = httpx.get(f"{url}/hello")
        # The custom route, after the app's own lifespan ran, wrapped in its own middleware.
        assert hello.json() == {"hello": "world", "started": True}
        assert hello.headers["x-served-by"] == "runplane-demo"
        assert httpx.post(f"{url}/threads", json={}).headers["x-served-by"] == "runplane-demo"

        # `configurable_headers` passes x-user-* (but not x-user-secret, nor credentials) to the graph.
        client = get_sync_client(
            url=url,
            api_key="sk-not-a-key",  # no keys configured on loopback: ignored, and never passed on
            headers={"x-user-id": "alice", "x-user-secret": "s3cret", "x-other": "o"},
        )
        thread = client.threads.create()
        values = client.runs.wait(thread["thread_id"], "whoami", input={})
        assert values == {"headers": {"x-user-id": "alice"}}
        stateless = client.runs.wait(None, "whoami", input={})
        assert stateless == {"headers": {"x-user-id": "alice"}}


def test_dev_on_loopback_welcomes_loopback_pages(tmp_path: Path) -> None:
    with server(tmp_path, "dev") as (url, log):
        for origin in (PAGE, "http://127.0.0.1:3000", "http://[::1]:8080"):
            answered = preflight(url, origin)
            assert answered.status_code == 200, origin
            assert answered.headers["access-control-allow-origin"] == origin
            searched = httpx.post(f"{url}/threads/search", json={}, headers={"Origin": origin})
            assert searched.status_code == 200 and searched.headers["access-control-allow-origin"] == origin

        # A page elsewhere that the developer allowed may reach the loopback server (Chrome's
        # Private Network Access), as with `langgraph dev`.
        with server(tmp_path, "dev", "--cors-origins", "https://smith.example") as (studio_url, _):
            answered = httpx.options(
                f"{studio_url}/threads/search",
                headers={
                    "Origin": "https://smith.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Private-Network": "true",
                },
            )
            assert answered.status_code == 200
            assert answered.headers["access-control-allow-private-network"] == "true"

        # Another site is refused, and said so once in the log, with the setting that allows it.
        for _ in range(3):
            refused = httpx.post(
                f"{url}/threads/search", json={}, headers={"Origin": "https://evil.example/"}
            )
            assert refused.status_code == 403
        assert preflight(url, "https://evil.example").status_code == 400
        lines = [line for line in log().splitlines() if "refused cross-origin" in line]
        assert len(lines) == 1, lines
        assert "--cors-origins=https://evil.example" in lines[0]


def test_serve_stays_closed_unless_told(tmp_path: Path) -> None:
    with server(tmp_path, "serve") as (url, log):
        refused = preflight(url, PAGE)
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        assert httpx.post(f"{url}/threads/search", json={}, headers={"Origin": PAGE}).status_code == 403
        assert "--cors-origins=http://localhost:5173" in log()
    with server(tmp_path, "serve", "--cors-origins", f"{PAGE}/,https://app.example:443") as (url, _):
        assert preflight(url, PAGE).headers["access-control-allow-origin"] == PAGE
        assert preflight(url, "https://app.example").status_code == 200
        assert preflight(url, "http://127.0.0.1:5173").status_code == 400


def test_a_bad_cors_origin_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*RUNPLANE, "serve", "--port", str(free_port()), "--cors-origins", "localhost:3000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "--cors-origins" in result.stderr and "scheme://host" in result.stderr
