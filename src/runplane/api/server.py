"""The HTTP server's own limits: uvicorn and h11 settings that keep idle or slow clients from holding
sockets for ever (slowloris) and bound how many connections one process serves.

- header-read timeout, 10 s (`RUNPLANE_HTTP_HEADER_TIMEOUT` in `runplane.settings`): a connection
  must deliver a request's line and headers within it, from its opening or from the first byte of
  its next request;
- keep-alive timeout, 75 s (`RUNPLANE_HTTP_KEEPALIVE_TIMEOUT`): an idle connection between requests
  is closed after it. It is longer than the clients' own (httpx, under the Python SDK, drops an
  idle connection after 5 s; Node's fetch after 4 s), so that the client always closes first: at
  uvicorn's 5 s both closed at once, and a request the client sent on the connection as the server
  closed it failed (`RemoteProtocolError: Server disconnected`; one join in 10,000 runs in
  agentbench's W6);
- connection cap, 1000 (`RUNPLANE_HTTP_MAX_CONNECTIONS`): beyond it, new requests get 503;
- the largest incomplete request head h11 buffers: 64 KiB.

uvicorn has a keep-alive timeout but none for the first request of a connection, nor for headers
that arrive a byte at a time: `HeaderTimeoutH11Protocol` adds that one, and
`HeaderTimeoutHttpToolsProtocol` adds it and the head bound to uvicorn's httptools protocol.

The parser is httptools (a C parser, about a tenth of h11's cost per request) when it is installed
(`pip install 'runplane[speed]'`), h11 otherwise; `RUNPLANE_HTTP_PARSER` chooses.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

T = TypeVar("T")

HEADER_TIMEOUT = 10.0
KEEPALIVE_TIMEOUT = 75
MAX_CONNECTIONS = 1000
MAX_HEAD_BYTES = 64 * 1024


class _HeadTimeout:
    """The header timeout both protocols share: armed when the connection opens, closing it if a
    request head is still being read `header_timeout` seconds after the timer was armed. Each
    protocol says when a head is being read (`_reading_head`) and re-arms it for the next one."""

    header_timeout = HEADER_TIMEOUT
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _reading_head(self) -> bool:
        raise NotImplementedError

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._reading_head() and not self.transport.is_closing():
            self.transport.close()


class HeaderTimeoutH11Protocol(_HeadTimeout, H11Protocol):
    """h11 protocol that closes a connection whose request head (request line and headers) is not
    complete `header_timeout` seconds after the connection opened or its previous response ended
    and the client started the next request."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_head() and not self.transport.is_closing():
            # Still reading a request head (perhaps the next one on a kept-alive connection).
            self._arm_head_timer()
        else:
            self._disarm_head_timer()

    def _reading_head(self) -> bool:
        return self.conn.their_state is h11.IDLE


if HttpToolsProtocol is not None:

    class HeaderTimeoutHttpToolsProtocol(_HeadTimeout, HttpToolsProtocol):
        """httptools protocol with `HeaderTimeoutH11Protocol`'s header timeout, and a request head
        (request line and headers) bounded to `MAX_HEAD_BYTES` as h11 bounds it: 400, then close.

        A head is being read from the connection's opening, and from the first byte of each next
        request (`on_message_begin`), until the parser has every header (`on_headers_complete`).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            #: Bytes received since the current head began; None while no head is being read.
            self._head_bytes: int | None = 0

        def data_received(self, data: bytes) -> None:
            if self._head_bytes is not None:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_bytes is not None and self._head_bytes > MAX_HEAD_BYTES:
                if not self.transport.is_closing():
                    self.send_400_response("Request head too large.")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_bytes is None:  # a kept-alive connection's next request
                self._head_bytes = 0
                self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._head_bytes = None
            self._disarm_head_timer()
            super().on_headers_complete()

        def _reading_head(self) -> bool:
            return self._head_bytes is not None


def http_protocol(parser: str = "auto") -> type[Any]:
    """uvicorn's protocol class for `parser`: `httptools`, `h11`, or `auto` (httptools when it is
    installed); each with the header timeout and the head bound."""
    if parser == "httptools" or (parser == "auto" and HttpToolsProtocol is not None):
        if HttpToolsProtocol is None:
            raise RuntimeError("RUNPLANE_HTTP_PARSER=httptools, but httptools is not installed")
        return HeaderTimeoutHttpToolsProtocol
    return HeaderTimeoutH11Protocol


def http_limits(
    header_timeout: float = HEADER_TIMEOUT,
    keepalive_timeout: int = KEEPALIVE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    parser: str = "auto",
) -> dict[str, Any]:
    """The `uvicorn.Config` keyword arguments for the limits in the module doc, on `parser`'s
    protocol (see `http_protocol`)."""
    base = http_protocol(parser)
    protocol = type(base.__name__, (base,), {"header_timeout": header_timeout})
    return {
        "http": protocol,
        "timeout_keep_alive": keepalive_timeout,
        "limit_concurrency": max_connections,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


def event_loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for `auto` when it is installed (`pip install 'runplane[speed]'`), or for
    `uvloop`; None (asyncio's) otherwise.

    uvicorn picks uvloop itself only when it creates the loop (`uvicorn.run`); `runplane serve`
    creates its own loop first (the stores open before the server starts), so it asks here.
    """
    if choice == "asyncio" or (choice == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    import uvloop

    return uvloop.new_event_loop


def run_server(main: Coroutine[Any, Any, T], event_loop: str = "auto") -> T:
    """`asyncio.run(main)` on the loop `event_loop_factory` chooses."""
    with asyncio.Runner(loop_factory=event_loop_factory(event_loop)) as runner:
        return runner.run(main)
