"""Custom auth's `@auth.on.crons` handlers on the cron routes: the values they receive, metadata
stamping, filters that hide other users' crons, and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import Auth

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.events.memory import InMemoryBus
from runplane.stores.memory import InMemoryStore
from runplane.worker.scheduler import CroniterSchedule
from tests.api.conftest import api_runtime

BASE_URL = "http://runplane.test"
USERS = {"ta": "alice", "tb": "bob"}


def _auth(seen: list[tuple[str, dict[str, Any]]]) -> Auth:
    auth = Auth()

    @auth.authenticate
    async def authenticate(authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ")
        if token not in USERS:
            raise Auth.exceptions.HTTPException(status_code=401, detail="who are you?")
        return USERS[token]

    @auth.on.crons
    async def crons(ctx: Auth.types.AuthContext, value: Any) -> Any:
        seen.append((ctx.action, dict(value)))
        if ctx.action == "delete" and ctx.user.identity == "bob":
            return False
        if ctx.action in ("create", "update") and isinstance(value.get("metadata"), dict):
            value["metadata"]["team"] = "team-" + ctx.user.identity
        return {"team": "team-" + ctx.user.identity}

    return auth


@pytest.fixture
async def clients() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, list[Any]]]:
    manager = RunManager(
        InMemoryStore(),
        InMemoryBus(),
        settings=ManagerSettings(wait_fallback_seconds=0.2),
        schedule=CroniterSchedule(),
    )
    seen: list[tuple[str, dict[str, Any]]] = []
    app = create_app(manager, api_runtime(), ApiSettings(custom_auth=_auth(seen)))
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers={"Authorization": "Bearer ta"}
        ) as a,
        httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers={"Authorization": "Bearer tb"}
        ) as b,
    ):
        yield a, b, seen


async def test_crons_handlers_stamp_filter_and_refuse(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, list[Any]],
) -> None:
    alice, bob, seen = clients
    created = await alice.post(
        "/runs/crons", json={"assistant_id": "echo", "schedule": "0 0 * * *", "metadata": {"k": 1}}
    )
    assert created.status_code == 200, created.text
    cron = created.json()
    assert cron["metadata"] == {"k": 1, "team": "team-alice"}  # stamped by the handler
    assert cron["user_id"] == "alice"
    action, value = seen[-1]
    assert action == "create"
    assert value["schedule"] == "0 0 * * *" and value["thread_id"] is None
    assert value["payload"]["assistant_id"] == "echo"

    assert (await alice.get(f"/runs/crons/{cron['cron_id']}")).status_code == 200
    assert seen[-1] == ("read", {"cron_id": cron["cron_id"]})
    assert [c["cron_id"] for c in (await alice.post("/runs/crons/search", json={})).json()] == [
        cron["cron_id"]
    ]
    assert seen[-1] == (
        "search",
        {"assistant_id": None, "thread_id": None, "limit": 10, "offset": 0, "metadata": {}},
    )
    assert (await alice.post("/runs/crons/count", json={})).json() == 1

    # Bob: another owner, and his filter would hide it anyway.
    assert (await bob.get(f"/runs/crons/{cron['cron_id']}")).status_code == 404
    assert (await bob.post("/runs/crons/search", json={})).json() == []
    mine = (await bob.post("/runs/crons", json={"assistant_id": "echo", "schedule": "0 0 * * *"})).json()
    assert mine["metadata"] == {"team": "team-bob"}
    refused = await bob.delete(f"/runs/crons/{mine['cron_id']}")
    assert refused.status_code == 403
    assert (await bob.post("/runs/crons/count", json={})).json() == 1

    updated = await alice.patch(
        f"/runs/crons/{cron['cron_id']}", json={"metadata": {"k": 2}, "enabled": False}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["metadata"] == {"k": 2, "team": "team-alice"}
    assert seen[-1][0] == "update" and seen[-1][1]["cron_id"] == cron["cron_id"]
    assert (await alice.delete(f"/runs/crons/{cron['cron_id']}")).status_code == 204
    assert (await alice.post("/runs/crons/count", json={})).json() == 0


async def test_a_filter_hides_an_owned_cron_whose_metadata_no_longer_matches(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient, list[Any]],
) -> None:
    alice, _, _ = clients
    cron = (await alice.post("/runs/crons", json={"assistant_id": "echo", "schedule": "0 0 * * *"})).json()
    # Overwriting the stamped key is stamped back by the handler: the cron stays visible.
    patched = await alice.patch(f"/runs/crons/{cron['cron_id']}", json={"metadata": {"team": "other"}})
    assert patched.json()["metadata"]["team"] == "team-alice"
    assert (await alice.get(f"/runs/crons/{cron['cron_id']}")).status_code == 200
