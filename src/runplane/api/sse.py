"""Long responses: Server-Sent Events for run streams, and heartbeat-padded JSON for wait/join.

Both send their headers at once (so the SDK learns the run id from `Content-Location` before the run
ends), keep the connection alive while the run is quiet, and race the work against the client's
`http.disconnect`: a client that leaves can cancel its run (`on_disconnect="cancel"`) or not.

SSE payloads are the bus's bytes, already JSON: they are framed, never decoded and re-encoded.

A client that accepts gzip gets an event stream compressed, with a sync flush after every frame so
each event reaches it at once. The payload is unchanged (the client's HTTP layer inflates it); the
gain is in `messages` mode, whose every `messages/partial` repeats the message so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from runplane.api.render import dumps
from runplane.core.errors import RunplaneError
from runplane.core.events import StreamEvent
from runplane.core.stream_modes import StreamModes

logger = logging.getLogger(__name__)

#: Where an ASGI middleware may put a gauge (`inc()`/`dec()`) counting open streams (`api.metrics`).
SSE_SUBSCRIBERS_SCOPE_KEY = "runplane.sse_subscribers"

HEARTBEAT = b": heartbeat\n\n"
SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"
#: Headers every stream carries: no caching, no proxy buffering (nginx honours X-Accel-Buffering).
SSE_HEADERS: Mapping[str, str] = {"cache-control": "no-store", "x-accel-buffering": "no"}

OnDisconnect = Callable[[], Awaitable[None]]

#: A wait or join that reached the server's `max_wait_seconds`: the run goes on; join it again.
TIMEOUT_BODY = orjson.dumps(
    {
        "__error__": {
            "error": "TimeoutError",
            "message": "the run did not finish within the server's wait limit; join it again",
        }
    }
)


def encode_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One SSE frame: `event:`, `data:` (one line per payload line) and, when given, `id:`."""
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        payload = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        payload = b"data: " + data + b"\n"
    frame = b"event: " + event.encode() + b"\n" + payload
    if event_id:
        frame += b"id: " + event_id.encode() + b"\n"
    return frame + b"\n"


def error_payload(exc: BaseException) -> bytes:
    """`{"error": type, "message": text}`, the shape of the reference server's `error` events."""
    if isinstance(exc, RunplaneError):
        return orjson.dumps({"error": type(exc).__name__, "message": exc.message})
    return orjson.dumps({"error": "InternalServerError", "message": "internal server error"})


def mode_filter(modes: StreamModes | None) -> Callable[[str], bool] | None:
    """A predicate keeping the events of `modes` (and `error`), or None to keep everything.

    As on the reference server, a filtered join does not repeat the `metadata` event.
    """
    return modes.accepts if modes else None


def _headers(media_type: str, headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", media_type.encode("latin-1"))]
    raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return raw


def accepts_gzip(scope: Scope) -> bool:
    """Whether the request's `Accept-Encoding` admits gzip (`gzip` or `*`, not with `q=0`)."""
    for name, value in scope.get("headers") or ():
        if name.lower() != b"accept-encoding":
            continue
        for item in value.decode("latin-1").split(","):
            coding, _, params = item.partition(";")
            if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
                continue
            quality = params.strip().lower().removeprefix("q=").strip() if "q=" in params.lower() else "1"
            try:
                if float(quality) > 0:
                    return True
            except ValueError:
                continue
    return False


class _Gzip:
    """A gzip member written frame by frame; each frame is sync-flushed, so it decodes on arrival."""

    def __init__(self) -> None:
        # Level 3, not zlib's default 6: on a 1000-token `messages` stream (each frame repeats the
        # message so far, sync-flushed) it took 10 us a frame instead of 18, for 48 kB instead of 52.
        self._compressor = zlib.compressobj(3, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def frame(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _settle(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and wait until it has really stopped."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class _LongResponse:
    """Headers now, body later, while watching for the client to leave."""

    media_type = "application/octet-stream"
    #: Whether the body may be gzip-compressed for a client that accepts it.
    compressible = False

    def __init__(
        self,
        *,
        headers: Mapping[str, str],
        heartbeat_seconds: float,
        on_disconnect: OnDisconnect | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.headers = headers
        self.heartbeat_seconds = heartbeat_seconds
        self.on_disconnect = on_disconnect
        self.max_seconds = max_seconds

    def _deadline(self) -> float | None:
        if self.max_seconds is None:
            return None
        return asyncio.get_running_loop().time() + self.max_seconds

    def _wait_seconds(self, deadline: float | None) -> float:
        """How long to wait for the next item: until the next heartbeat, or the deadline if sooner."""
        if deadline is None:
            return self.heartbeat_seconds
        return max(0.0, min(self.heartbeat_seconds, deadline - asyncio.get_running_loop().time()))

    @staticmethod
    def _expired(deadline: float | None) -> bool:
        return deadline is not None and asyncio.get_running_loop().time() >= deadline

    async def produce(self, send_chunk: Callable[[bytes], Awaitable[None]]) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gzip = _Gzip() if self.compressible and accepts_gzip(scope) else None
        headers = dict(self.headers)
        if self.compressible:
            headers["vary"] = "Accept-Encoding"
        if gzip is not None:
            headers["content-encoding"] = "gzip"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": _headers(self.media_type, headers),
            }
        )

        async def send_chunk(chunk: bytes) -> None:
            body = gzip.frame(chunk) if gzip is not None else chunk
            await send({"type": "http.response.body", "body": body, "more_body": True})

        async def produce_all() -> None:
            await self.produce(send_chunk)
            last = gzip.end() if gzip is not None else b""
            await send({"type": "http.response.body", "body": last, "more_body": False})

        producer = asyncio.ensure_future(produce_all())
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also reached when the server cancels this request: stop both before leaving.
            completed = producer.done() and not producer.cancelled() and producer.exception() is None
            if not producer.done():
                await _settle(producer)
            if not watcher.done():
                await _settle(watcher)
        # The client left early if we stopped before the end: it hung up (watcher) or a send to it
        # failed (ASGI >= 2.4 servers raise OSError then).
        disconnected = not completed
        if not producer.cancelled() and producer.exception() is not None:
            exc = producer.exception()
            if not isinstance(exc, OSError):
                logger.error("response producer failed", exc_info=exc, extra={"action": "long_response"})
        if disconnected and self.on_disconnect is not None:
            try:
                await self.on_disconnect()
            except Exception:
                logger.exception("on_disconnect action failed", extra={"action": "on_disconnect"})


class EventStream(_LongResponse):
    """A run's events as SSE, with heartbeats while the run is quiet.

    Args:
        events: the bus subscription (ends when the run's stream ends).
        headers: extra response headers (`Location`, `Content-Location`).
        heartbeat_seconds: idle time before a `: heartbeat` comment.
        with_ids: emit `id:` lines, so clients can resume with `Last-Event-ID`.
        accept: keep only events whose name passes (stream mode filter); None keeps all.
        on_disconnect: awaited when the client leaves before the stream ends.
        max_seconds: end the response after this long even if the run goes on (None: never);
            the client can join the stream again.
    """

    media_type = SSE_MEDIA_TYPE
    compressible = True

    def __init__(
        self,
        events: AsyncIterator[StreamEvent],
        *,
        headers: Mapping[str, str],
        heartbeat_seconds: float,
        with_ids: bool = False,
        accept: Callable[[str], bool] | None = None,
        on_disconnect: OnDisconnect | None = None,
        max_seconds: float | None = None,
    ) -> None:
        super().__init__(
            headers={**SSE_HEADERS, **headers},
            heartbeat_seconds=heartbeat_seconds,
            on_disconnect=on_disconnect,
            max_seconds=max_seconds,
        )
        self.events = events
        self.with_ids = with_ids
        self.accept = accept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Counted while the response lives (`runplane_sse_subscribers`, when metrics are on).
        gauge = scope.get(SSE_SUBSCRIBERS_SCOPE_KEY)
        if gauge is not None:
            gauge.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            if gauge is not None:
                gauge.dec()

    async def produce(self, send_chunk: Callable[[bytes], Awaitable[None]]) -> None:
        # A pump task reads the subscription and frames its events into `frames`; this loop sends
        # whatever is framed, in one chunk. Events that arrive together (a graph that emits many
        # in one step) thus leave in one write, and one pass down the ASGI stack, per loop tick.
        # The first frame (`metadata`, with the run id) leaves on its own, as soon as it is made.
        frames = _Frames()
        pump = asyncio.ensure_future(self._pump(frames))
        deadline = self._deadline()
        first = True
        try:
            while True:
                if not frames.ready.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._wait_seconds(deadline)):
                            await frames.ready.wait()
                chunk = frames.take(only_one=first)
                first = first and not chunk
                if chunk:
                    await send_chunk(chunk)
                elif frames.ended:
                    return
                elif not frames.ready.is_set():
                    if self._expired(deadline):
                        return
                    await send_chunk(HEARTBEAT)
        finally:
            await _settle(pump)
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _pump(self, frames: _Frames) -> None:
        try:
            async for event in self.events:
                if self.accept is None or self.accept(event.event):
                    frames.add(encode_event(event.event, event.data, event.id if self.with_ids else None))
                    if frames.full:
                        await frames.drained.wait()  # the client is slow: let the bus buffer
        except Exception as exc:
            if not isinstance(exc, RunplaneError):
                logger.exception("run stream failed", extra={"action": "sse"})
            frames.add(encode_event("error", error_payload(exc)))
        finally:
            frames.end()


class _Frames:
    """SSE frames the pump made and the sender has not sent yet."""

    #: Bytes the pump frames ahead of a slow client before it waits (the bus buffers the rest).
    LIMIT = 1 << 20

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._size = 0
        self.ended = False
        self.ready = asyncio.Event()  # frames to send, or the end
        self.drained = asyncio.Event()

    @property
    def full(self) -> bool:
        return self._size >= self.LIMIT

    def add(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._size += len(frame)
        if self.full:
            self.drained.clear()
        self.ready.set()

    def end(self) -> None:
        self.ended = True
        self.ready.set()

    def take(self, *, only_one: bool = False) -> bytes:
        if only_one and len(self._frames) > 1:
            chunk = self._frames.pop(0)
            self._size -= len(chunk)
            return chunk
        chunk = b"".join(self._frames)
        self._frames.clear()
        self._size = 0
        self.drained.set()
        if not self.ended:
            self.ready.clear()
        return chunk


class WaitJson(_LongResponse):
    """A JSON body computed when a run ends; newlines (valid JSON whitespace) keep the connection
    alive meanwhile. Failures after the headers are reported as `{"__error__": ...}`."""

    media_type = "application/json"

    def __init__(
        self,
        compute: Callable[[], Awaitable[Any]],
        *,
        headers: Mapping[str, str],
        heartbeat_seconds: float,
        on_disconnect: OnDisconnect | None = None,
        max_seconds: float | None = None,
    ) -> None:
        super().__init__(
            headers=headers,
            heartbeat_seconds=heartbeat_seconds,
            on_disconnect=on_disconnect,
            max_seconds=max_seconds,
        )
        self.compute = compute

    async def produce(self, send_chunk: Callable[[bytes], Awaitable[None]]) -> None:
        task = asyncio.ensure_future(self.compute())
        deadline = self._deadline()
        try:
            while not (await asyncio.wait({task}, timeout=self._wait_seconds(deadline)))[0]:
                if self._expired(deadline):
                    await send_chunk(TIMEOUT_BODY)
                    return
                await send_chunk(b"\n")
            try:
                result = task.result()
                body = result if isinstance(result, bytes) else dumps(result)
            except Exception as exc:
                if not isinstance(exc, RunplaneError):
                    logger.exception("wait failed", extra={"action": "wait"})
                body = b'{"__error__":' + error_payload(exc) + b"}"
            await send_chunk(body)
        finally:
            if not task.done():
                await _settle(task)
