"""An existing FastAPI application that embeds runplane: its own routes (`/api/...`), its own auth
(bearer tokens), and the LangGraph-compatible API mounted under its own prefix (`/agents`).

    EXAMPLE_DATABASE_URL=sqlite:///./example.db uvicorn examples.embedded_app.app:app

Runs survive restarts (they live in the database), a run whose process died is resumed by the next
process on the database, and `runplane worker --config examples/embedded_app/langgraph.json` on the
same database executes runs too (start the app with EXAMPLE_WORKERS=0 to leave all of them to it).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response

import runplane
from examples.embedded_app.graphs import agent

#: The application's own users: bearer token -> user id (a real app asks its session store).
TOKENS = {"alice-token": "alice", "bob-token": "bob"}


def user_of(request: Request) -> str | None:
    """The application's authentication, used by its routes and by the mounted agent API alike."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return TOKENS.get(token) if scheme.lower() == "bearer" else None


def current_user(request: Request) -> str:
    user = user_of(request)
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


class Message(BaseModel):
    text: str
    gate: str | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"


def run_view(run: runplane.Run) -> dict[str, Any]:
    return {"run_id": run.run_id, "thread_id": run.thread_id, "status": run.status, "error": run.error}


def create_app(database_url: str, *, workers: int = 4, lease_seconds: float = 30.0) -> FastAPI:
    rp = runplane.open(database_url, graphs={"agent": agent}, workers=workers, lease_seconds=lease_seconds)
    app = FastAPI(lifespan=rp.lifespan)
    app.mount("/agents", rp.asgi_app(authenticate=user_of))  # for langgraph-sdk clients

    @app.exception_handler(runplane.RunplaneError)
    async def runplane_error(request: Request, exc: runplane.RunplaneError) -> Response:
        status = {runplane.NotFound: 404, runplane.ThreadBusy: 409, runplane.Conflict: 409}
        return JSONResponse({"detail": exc.message}, status_code=status.get(type(exc), 422))

    @app.post("/api/threads")
    async def new_thread(user: str = Depends(current_user)) -> dict[str, Any]:
        thread = await rp.threads.create(user=user)
        return {"thread_id": thread.thread_id}

    @app.post("/api/threads/{thread_id}/messages")
    async def send(thread_id: str, message: Message, user: str = Depends(current_user)) -> dict[str, Any]:
        run = await rp.runs.create(
            thread_id,
            "agent",
            user=user,
            input={"messages": [message.text], "gate": message.gate or ""},
            multitask_strategy=message.multitask_strategy,
        )
        return run_view(run)

    @app.get("/api/threads/{thread_id}/messages")
    async def messages(thread_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
        state = await rp.threads.state(thread_id, user=user)
        return {"messages": state["values"].get("messages", [])}

    @app.get("/api/threads/{thread_id}/runs")
    async def runs(thread_id: str, user: str = Depends(current_user)) -> list[dict[str, Any]]:
        return [run_view(run) for run in await rp.runs.list(thread_id, user=user, limit=100)]

    @app.get("/api/threads/{thread_id}/runs/{run_id}")
    async def run(thread_id: str, run_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
        return run_view(await rp.runs.get(run_id, user=user, thread_id=thread_id))

    @app.post("/api/threads/{thread_id}/runs/{run_id}/cancel")
    async def cancel(thread_id: str, run_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
        stopped = await rp.runs.cancel(run_id, user=user, thread_id=thread_id, wait=True)
        assert stopped is not None  # an interrupt keeps the run (a rollback would delete it)
        return run_view(stopped)

    @app.get("/api/threads/{thread_id}/runs/{run_id}/join")
    async def join(thread_id: str, run_id: str, user: str = Depends(current_user)) -> dict[str, Any]:
        finished = await rp.runs.join(run_id, user=user, thread_id=thread_id)
        if finished is None:
            raise HTTPException(404, "the run was deleted")
        return run_view(finished)

    @app.get("/api/threads/{thread_id}/runs/{run_id}/stream")
    async def stream(
        thread_id: str, run_id: str, request: Request, user: str = Depends(current_user)
    ) -> Response:
        await rp.runs.get(run_id, user=user, thread_id=thread_id)  # a 404 before the stream starts
        resume_after = request.headers.get("last-event-id")
        events = rp.runs.stream(run_id, user=user, thread_id=thread_id, last_event_id=resume_after)
        return runplane.sse_response(events)

    @app.delete("/api/threads/{thread_id}/runs/{run_id}", status_code=204)
    async def delete(thread_id: str, run_id: str, user: str = Depends(current_user)) -> None:
        await rp.runs.delete(run_id, user=user, thread_id=thread_id, stop_running=True)

    app.state.runplane = rp
    return app


def app_from_env() -> FastAPI:
    return create_app(
        os.environ.get("EXAMPLE_DATABASE_URL", "sqlite:///./example.db"),
        workers=int(os.environ.get("EXAMPLE_WORKERS", "4")),
        lease_seconds=float(os.environ.get("EXAMPLE_LEASE_SECONDS", "30")),
    )
