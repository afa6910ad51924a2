"""What the protocol adapters share: authorizing an inner operation as the API route it stands for,
and running an assistant to its output. Runs go through `api.runs.create` and the `RunManager`, so
MCP, A2A and thread streaming have no run lifecycle of their own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from runplane.api import runs, threads
from runplane.api import schemas as s
from runplane.api.errors import response_for
from runplane.api.routing import Call, Endpoint

_BY_ROUTE: dict[tuple[str, str], Endpoint] = {
    (e.method, e.path): e for e in (*runs.ENDPOINTS, *threads.ENDPOINTS)
}


async def as_route(
    call: Call,
    method: str,
    path: str,
    *,
    path_params: Mapping[str, str] | None = None,
    body: Any = None,
    query: Any = None,
) -> Call:
    """`call` re-addressed to the API route an inner operation stands for, authorized as that route
    (`@auth.on` handlers see exactly what they would see on the runs API)."""
    inner = replace(call, path=dict(path_params or {}), body=body, query=query, filters=None)
    guard = call.services.guard
    if guard is None:
        return inner
    return await guard(_BY_ROUTE[(method, path)], inner)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a finished run produced: its last `values`, or the `error` event's payload."""

    values: Any
    error: Mapping[str, Any] | None


async def run_to_output(call: Call, body: s.RunCreateStateless) -> Outcome:
    """Run `body` as a stateless run (on a temporary thread) and wait for its output.

    Raises:
        NotFound: no such assistant; ApiError: refused by authorization or invalid.
    """
    inner = await as_route(call, "POST", "/runs/wait", body=body)
    created = await runs.create(inner, inner.body, wait=True)
    values: Any = None
    error: Mapping[str, Any] | None = None
    async for event in call.manager.follow_new_run(created.run.run_id, call.owner):
        if event.event == "values":
            values = orjson.loads(event.data)
        elif event.event == "error":
            parsed = orjson.loads(event.data)
            error = parsed if isinstance(parsed, dict) else {"error": "Error", "message": str(parsed)}
    return Outcome(values, error)


def status_and_detail(exc: Exception) -> tuple[int, str]:
    """The HTTP status and `detail` the API would answer for `exc` (unexpected errors are logged
    and become a bare 500, so a protocol error never leaks internals either)."""
    response = response_for(exc)
    detail = orjson.loads(bytes(response.body)).get("detail", "")
    return response.status_code, str(detail)
