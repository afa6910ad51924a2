"""`sse_response`: a run's events as a Server-Sent Events response, for a host application's own
Starlette or FastAPI route.

    @app.get("/api/threads/{thread_id}/runs/{run_id}/stream")
    async def stream(thread_id: str, run_id: str, request: Request, user: str = Depends(current_user)):
        await rp.runs.get(run_id, user=user, thread_id=thread_id)  # 404 before the stream starts
        events = rp.runs.stream(run_id, user=user, thread_id=thread_id,
                                last_event_id=request.headers.get("last-event-id"))
        return runplane.sse_response(events)

The frames are those of the LangGraph API (`event:`, `data:`, `id:`), so a browser's `EventSource`
resumes with `Last-Event-ID` after a dropped connection. A quiet run sends `: heartbeat` comments so
proxies keep the connection open. When the client leaves, Starlette stops the response; the run goes
on (cancel it from the route if that is what leaving means for the application).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.responses import StreamingResponse

from runplane.api.sse import HEARTBEAT, SSE_HEADERS, encode_event, error_payload
from runplane.core.errors import RunplaneError
from runplane.core.events import StreamEvent

logger = logging.getLogger(__name__)

SSE_MEDIA_TYPE = "text/event-stream"


async def sse_frames(
    events: AsyncIterator[StreamEvent], *, heartbeat_seconds: float = 5.0
) -> AsyncIterator[bytes]:
    """`events` as SSE frames, with a heartbeat after `heartbeat_seconds` of silence. A failure of the
    stream (an unknown run, a bad `last_event_id`) ends it with an `error` event, as the API does."""
    pending: asyncio.Future[StreamEvent] | None = None
    try:
        while True:
            if pending is None:
                # One `anext` is kept across heartbeats: cancelling it would close the subscription.
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=heartbeat_seconds)
            if not done:
                yield HEARTBEAT
                continue
            finished, pending = pending, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            except Exception as exc:
                if not isinstance(exc, RunplaneError):
                    logger.exception("run stream failed", extra={"action": "sse"})
                yield encode_event("error", error_payload(exc))
                return
            yield encode_event(event.event, event.data, event.id or None)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


def sse_response(
    events: AsyncIterator[StreamEvent],
    *,
    heartbeat_seconds: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A Starlette (and so FastAPI) response streaming `events` (from `Runplane.runs.stream`) as SSE.

    Args:
        events: the run's events.
        heartbeat_seconds: idle seconds before a `: heartbeat` comment.
        headers: extra response headers.
    """
    return StreamingResponse(
        sse_frames(events, heartbeat_seconds=heartbeat_seconds),
        media_type=SSE_MEDIA_TYPE,
        headers={**SSE_HEADERS, **(headers or {})},
    )
