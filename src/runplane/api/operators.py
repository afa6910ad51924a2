"""Operators' extensions of the API, under `/runplane/`: what LangGraph's wire `Run` does not carry
(attempts, start and end, tokens, model, error) and the queue at a glance. The dashboard reads them;
they take the caller's identity like every route, so a user sees only their own runs.

Under LangGraph custom auth no `@auth.on` rule classifies these routes, so they answer 403 (the
dashboard then shows the standard fields only) rather than bypass the application's rules.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from runplane.api import schemas as s
from runplane.api.render import json_response, run_json
from runplane.api.routing import Call, Endpoint, Reply
from runplane.core.models import Run, RunFilter


def run_details(run: Run) -> dict[str, Any]:
    """The wire run plus how it went."""
    return {
        **run_json(run),
        "attempt": run.attempt,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "model_name": run.model_name,
        "usage": run.usage.as_dict(),
        "error": run.error,
        "cancel_action": run.cancel_action,
    }


async def list_run_details(call: Call) -> Response:
    query: s.RunListQuery = call.query
    runs = await call.manager.list_runs(
        call.path["thread_id"],
        call.owner,
        RunFilter(status=query.status, limit=query.limit, offset=query.offset),
    )
    return json_response([run_details(run) for run in runs])


async def queue(call: Call) -> Response:
    stats = await call.manager.queue_stats()
    return json_response(
        {"pending": stats.pending, "running": stats.running, "busy_workers": stats.busy_workers}
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/runplane/threads/{thread_id}/runs",
        list_run_details,
        "A thread's runs with attempts, timing, tokens and model",
        "Operators",
        query=s.RunListQuery,
        replies={200: Reply("The runs, newest first."), 404: Reply("Unknown thread.", s.ErrorOut)},
    ),
    Endpoint(
        "GET",
        "/runplane/queue",
        queue,
        "Runs pending and running, and busy workers (all users)",
        "Operators",
        replies={200: Reply("The queue.")},
    ),
)
