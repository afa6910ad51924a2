"""The HTTP server's own limits, on a real `runplane serve` and raw sockets: connections that never
send a request head (or send it a byte at a time) are closed after the header timeout, a head that
outgrows 64 KiB gets 400 and a close, and beyond the connection cap new requests get 503. On each
HTTP parser (`RUNPLANE_HTTP_PARSER`): httptools, which `serve` uses when installed, and h11."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e._procs import RUNPLANE, free_port, wait_until

pytestmark = [pytest.mark.slow]


@contextlib.contextmanager
def serve(tmp_path: Path, **env: str) -> Iterator[str]:
    port = free_port()
    argv = [*RUNPLANE, "serve", "--database-url", "memory://", "--port", str(port), "--workers", "0"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(argv, env={**environment, **env}, cwd=tmp_path, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/ok", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, "runplane serve")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture(params=["httptools", "h11"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    with serve(tmp_path, RUNPLANE_HTTP_HEADER_TIMEOUT="0.5", RUNPLANE_HTTP_PARSER=request.param) as url:
        yield url


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True once the server closed `sock` (recv gives EOF or a reset) within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_silent_and_slow_connections_are_closed_after_the_header_timeout(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    dripping = socket.create_connection(("127.0.0.1", port))
    try:
        dripping.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")  # the head never ends
        cut = False
        deadline = time.monotonic() + 10.0
        while not cut and time.monotonic() < deadline:
            try:
                dripping.sendall(b"X-Slow: 1\r\n")  # bytes keep coming, a header line at a time
            except (BrokenPipeError, ConnectionResetError):
                cut = True  # the server closed it
            time.sleep(0.1)
        # Bounded, not timed: without the limit they would stay open for ever.
        assert cut or closed_by_server(dripping, 10)
        assert all(closed_by_server(sock, 10) for sock in silent)
        # The server still serves, and a kept-alive connection is not cut while a request is fast.
        assert httpx.get(f"{server}/ok", timeout=5).status_code == 200
    finally:
        for sock in [*silent, dripping]:
            sock.close()


def test_a_head_beyond_64_kib_gets_400_and_a_close(server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(80):  # 80 KB of header lines, and the head never ends
                sock.sendall(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000))
        sock.settimeout(10)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    # A head that ends in time is served on a fresh connection.
    assert httpx.get(f"{server}/ok", headers={"x-fine": "a" * 8000}, timeout=5).status_code == 200


def test_beyond_the_connection_cap_requests_get_503(tmp_path: Path) -> None:
    with serve(tmp_path, RUNPLANE_HTTP_MAX_CONNECTIONS="5", RUNPLANE_HTTP_HEADER_TIMEOUT="30") as url:
        port = int(url.rsplit(":", 1)[1])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        try:
            # Accepted before the request's connection (the listen backlog is FIFO), so counted.
            response = httpx.get(f"{url}/ok", timeout=5)
            assert response.status_code == 503
        finally:
            for sock in held:
                sock.close()
        wait_until(lambda: httpx.get(f"{url}/ok", timeout=5).status_code == 200, 10, "capacity back")
