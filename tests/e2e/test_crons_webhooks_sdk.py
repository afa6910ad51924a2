"""Crons and webhooks through the official `langgraph-sdk` over a real loopback socket: the cron
API `client.crons` speaks, a seconds-level cron firing real runs, webhooks delivered signed to a
real receiver, retried, and refused where the server must not reach (SSRF)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError

from runplane.api import ApiSettings, create_app
from runplane.core.manager import ManagerSettings, RunManager
from runplane.core.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, AddressPolicy, verify
from runplane.demo.graphs import echo, slow
from runplane.events.memory import InMemoryBus
from runplane.runtime.graphs import LangGraphRuntime
from runplane.stores.memory import InMemoryStore
from runplane.worker import Worker
from runplane.worker.scheduler import CroniterSchedule, Scheduler
from runplane.worker.webhooks import WebhookDispatcher, WebhookGuard
from tests.api._support import serve
from tests.e2e._receiver import Receiver, receiver

SECRET = "test-secret"


@dataclass
class Server:
    sdk: LangGraphClient
    url: str
    manager: RunManager
    hooks: Receiver
    dispatcher: WebhookDispatcher
    scheduler: Scheduler
    worker: Worker

    async def deliveries(self, count: int) -> list[Any]:
        """`count` deliveries; on a timeout, what every background loop did, to tell which stalled."""
        try:
            return await self.hooks.wait_for(count)
        except TimeoutError:
            outbox = await self.manager.list_webhooks()
            raise AssertionError(
                f"{len(self.hooks.deliveries)} of {count} deliveries: {self.scheduler!r} "
                f"{self.worker!r} {self.dispatcher!r} outbox={outbox}"
            ) from None


@contextlib.asynccontextmanager
async def running_server(policy: AddressPolicy) -> AsyncIterator[Server]:
    guard = WebhookGuard(policy)
    manager = RunManager(
        InMemoryStore(),
        InMemoryBus(),
        settings=ManagerSettings(wait_fallback_seconds=0.5),
        schedule=CroniterSchedule(),
        url_guard=guard,
    )
    runtime = LangGraphRuntime({"echo": echo, "slow": slow}, InMemorySaver())
    worker = Worker(manager, runtime, concurrency=4, shutdown_grace=0.5, poll_interval=0.05)
    dispatcher = WebhookDispatcher(
        manager, guard, secret=SECRET, base_delay=0.05, max_delay=0.2, max_attempts=3
    )
    scheduler = Scheduler(manager)
    await worker.start()
    await dispatcher.start()
    await scheduler.start()
    app = create_app(manager, runtime, ApiSettings(heartbeat_seconds=0.2))
    try:
        async with receiver() as hooks, serve(app) as url:
            client = get_client(url=url, api_key=None)
            try:
                yield Server(client, url, manager, hooks, dispatcher, scheduler, worker)
            finally:
                await client.aclose()
    finally:
        await scheduler.stop()
        await dispatcher.stop()
        await worker.stop()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with running_server(AddressPolicy(allow_loopback=True)) as running:
        yield running


# -- the cron API ----------------------------------------------------------------------------------


async def test_cron_crud_through_the_sdk(server: Server) -> None:
    sdk = server.sdk
    cron: dict[str, Any] = await sdk.crons.create(  # type: ignore[assignment]  # typed as a Run
        "echo", schedule="0 9 * * 1", input={"x": 1}, metadata={"team": "a"}, timezone="Europe/Paris"
    )
    assert cron["schedule"] == "0 9 * * 1" and cron["timezone"] == "Europe/Paris"
    assert cron["thread_id"] is None and cron["on_run_completed"] == "delete" and cron["enabled"] is True
    assert cron["payload"]["input"] == {"x": 1}
    assert cron["payload"]["config"]["configurable"]["cron_id"] == cron["cron_id"]
    assert cron["next_run_date"].endswith("+00:00") and "T08:00:00" in cron["next_run_date"]
    thread = await sdk.threads.create()
    on_thread: dict[str, Any] = await sdk.crons.create_for_thread(  # type: ignore[assignment]
        thread["thread_id"],
        "echo",
        schedule="*/5 * * * *",
        multitask_strategy="reject",
        enabled=False,
        end_time=datetime(2099, 1, 1, tzinfo=UTC),
    )
    assert on_thread["thread_id"] == thread["thread_id"] and on_thread["on_run_completed"] is None
    assert on_thread["end_time"] == "2099-01-01T00:00:00+00:00" and on_thread["enabled"] is False

    async with httpx.AsyncClient(base_url=server.url) as http:
        got = await http.get(f"/runs/crons/{cron['cron_id']}")
        assert got.status_code == 200 and got.json() == cron
        assert (await http.get(f"/runs/crons/{uuid.uuid4()}")).status_code == 404
        assert (await http.get("/runs/crons/not-a-uuid")).status_code == 422
        assert (await http.get("/info")).json()["flags"]["crons"] is True

    everything = await sdk.crons.search()
    assert [c["cron_id"] for c in everything] == [on_thread["cron_id"], cron["cron_id"]]
    assert [c["cron_id"] for c in await sdk.crons.search(thread_id=thread["thread_id"])] == [
        on_thread["cron_id"]
    ]
    assert [c["cron_id"] for c in await sdk.crons.search(metadata={"team": "a"})] == [cron["cron_id"]]
    assert [c["cron_id"] for c in await sdk.crons.search(enabled=False)] == [on_thread["cron_id"]]
    ascending = await sdk.crons.search(sort_by="created_at", sort_order="asc", select=["cron_id", "schedule"])
    assert ascending == [
        {"cron_id": cron["cron_id"], "schedule": "0 9 * * 1"},
        {"cron_id": on_thread["cron_id"], "schedule": "*/5 * * * *"},
    ]
    assert await sdk.crons.count() == 2
    assert await sdk.crons.count(metadata={"team": "a"}) == 1

    updated: dict[str, Any] = await sdk.crons.update(  # type: ignore[assignment]
        cron["cron_id"], schedule="30 10 * * *", metadata={"more": True}, input={"x": 2}
    )
    assert updated["schedule"] == "30 10 * * *" and "T09:30:00" in updated["next_run_date"]  # Paris
    assert updated["metadata"] == {"team": "a", "more": True}
    assert updated["payload"]["input"] == {"x": 2}
    assert updated["payload"]["config"]["configurable"]["cron_id"] == cron["cron_id"]

    await sdk.crons.delete(cron["cron_id"])
    with pytest.raises(NotFoundError):
        await sdk.crons.delete(cron["cron_id"])
    assert await sdk.crons.count() == 1


async def test_bad_crons_are_refused_and_change_nothing(server: Server) -> None:
    sdk = server.sdk
    with pytest.raises(UnprocessableEntityError, match="Invalid cron schedule"):
        await sdk.crons.create("echo", schedule="not a cron")
    with pytest.raises(UnprocessableEntityError, match="Invalid timezone"):
        await sdk.crons.create("echo", schedule="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(NotFoundError):
        await sdk.crons.create_for_thread(str(uuid.uuid4()), "echo", schedule="* * * * *")
    with pytest.raises(NotFoundError):
        await sdk.crons.create("no-such-graph", schedule="* * * * *")
    cron: dict[str, Any] = await sdk.crons.create("echo", schedule="0 0 * * *")  # type: ignore[assignment]
    with pytest.raises(UnprocessableEntityError, match="Invalid cron schedule"):
        await sdk.crons.update(cron["cron_id"], schedule="61 * * * *")
    assert await sdk.crons.count() == 1
    assert (await sdk.crons.search())[0]["schedule"] == "0 0 * * *"


# -- firing, and webhooks --------------------------------------------------------------------------


async def test_a_seconds_cron_fires_runs_that_call_their_webhook_signed(server: Server) -> None:
    sdk, hooks = server.sdk, server.hooks
    tick: dict[str, Any] = {"messages": [{"role": "user", "content": "tick"}]}
    cron: dict[str, Any] = await sdk.crons.create(  # type: ignore[assignment]  # typed as a Run
        "echo",
        schedule="* * * * * *",  # every second (croniter's sixth field)
        input=tick,
        metadata={"job": "ticks"},
        webhook=f"{hooks.url}/done",
        on_run_completed="keep",
    )
    first, second = await server.deliveries(2)
    await sdk.crons.update(cron["cron_id"], enabled=False)
    for delivery in (first, second):
        body = delivery.json
        assert delivery.path == "/done"
        assert verify(
            SECRET,
            delivery.headers[TIMESTAMP_HEADER.lower()],
            delivery.body,
            delivery.headers[SIGNATURE_HEADER.lower()],
        )
        assert not verify(
            "wrong",
            delivery.headers[TIMESTAMP_HEADER.lower()],
            delivery.body,
            delivery.headers[SIGNATURE_HEADER.lower()],
        )
        assert delivery.headers[DELIVERY_HEADER.lower()]
        assert body["status"] == "success"
        assert body["metadata"]["job"] == "ticks" and body["metadata"]["cron_id"] == cron["cron_id"]
        assert body["kwargs"]["config"]["configurable"]["cron_id"] == cron["cron_id"]
        assert body["values"]["messages"][-1]["content"]
        assert {"run_started_at", "run_ended_at", "webhook_sent_at", "created_at"} <= set(body)
        # An ordinary run on a kept thread of its own.
        run = await sdk.runs.get(body["thread_id"], body["run_id"])
        assert run["status"] == "success"
    assert first.json["thread_id"] != second.json["thread_id"]
    assert await server.manager.list_webhooks() == []  # delivered: gone from the outbox


async def test_a_stateless_run_webhook_arrives_after_its_thread_is_gone(server: Server) -> None:
    hooks = server.hooks
    run = await server.sdk.runs.create(None, "echo", input={"messages": []}, webhook=f"{hooks.url}/x")
    [delivery] = await hooks.wait_for(1)
    assert delivery.json["run_id"] == run["run_id"] and delivery.json["status"] == "success"


async def test_a_failing_receiver_is_retried_with_backoff(server: Server) -> None:
    hooks = server.hooks
    hooks.script = [503, 500]
    thread = await server.sdk.threads.create()
    await server.sdk.runs.wait(thread["thread_id"], "echo", input={"messages": []}, webhook=f"{hooks.url}/r")
    attempts = await hooks.wait_for(3)
    assert len({d.headers[DELIVERY_HEADER.lower()] for d in attempts}) == 1  # one delivery, three tries
    await server.dispatcher.run_until_idle()
    assert server.dispatcher.retried == 2 and server.dispatcher.delivered == 1


async def test_a_redirect_to_a_refused_address_is_not_followed(server: Server) -> None:
    hooks = server.hooks
    hooks.script = [("redirect", "http://169.254.169.254/latest/meta-data/")]
    thread = await server.sdk.threads.create()
    await server.sdk.runs.wait(thread["thread_id"], "echo", input={"messages": []}, webhook=f"{hooks.url}/r")
    await hooks.wait_for(1)
    failed = await _until_failed(server.manager)
    assert "cloud metadata" in (failed.last_error or "") and failed.attempts == 1
    assert len(hooks.deliveries) == 1


async def _until_failed(manager: RunManager) -> Any:
    for _ in range(400):  # the dispatcher records the refusal right after the redirect arrived
        failed = [d for d in await manager.list_webhooks() if d.status == "failed"]
        if failed:
            return failed[0]
        await asyncio.sleep(0.01)
    raise AssertionError("the delivery was never marked failed")


# -- SSRF ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "ftp://example.com/hook",
        "/relative/hook",
    ],
)
async def test_private_webhooks_are_refused_at_creation(url: str) -> None:
    async with running_server(AddressPolicy()) as server:
        sdk = server.sdk
        thread = await sdk.threads.create()
        with pytest.raises(UnprocessableEntityError):
            await sdk.runs.create(thread["thread_id"], "echo", input={}, webhook=url)
        with pytest.raises(UnprocessableEntityError):
            await sdk.runs.create(None, "echo", input={}, webhook=url)
        with pytest.raises(UnprocessableEntityError):
            await sdk.crons.create("echo", schedule="* * * * *", webhook=url)
        cron: dict[str, Any] = await sdk.crons.create("echo", schedule="0 0 * * *")  # type: ignore[assignment]
        with pytest.raises(UnprocessableEntityError):
            await sdk.crons.update(cron["cron_id"], webhook=url)
        assert await sdk.runs.list(thread["thread_id"]) == []
        assert await sdk.crons.count() == 1


async def test_the_allow_list_lets_chosen_private_hosts_through() -> None:
    policy = AddressPolicy.parse("10.0.0.0/8, hooks.internal")
    async with running_server(policy) as server:
        thread = await server.sdk.threads.create()
        run = await server.sdk.runs.create(thread["thread_id"], "echo", input={}, webhook="http://10.9.8.7/h")
        assert run["kwargs"]["webhook"]  # type: ignore[typeddict-item]  # the SDK's Run omits kwargs == "http://10.9.8.7/h"
        await server.sdk.crons.create("echo", schedule="0 0 * * *", webhook="http://hooks.internal/h")
        with pytest.raises(UnprocessableEntityError):
            await server.sdk.runs.create(
                thread["thread_id"], "echo", input={}, webhook="http://192.168.1.1/h"
            )
