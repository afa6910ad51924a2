"""Crons and webhooks across real `runplane serve` processes sharing one database.

- Two processes, each running a scheduler, race for every slot of an every-second cron: each slot
  fires exactly once (the schedulers log each slot they fired; the database holds one thread and
  one run per logged slot).
- A process killed with SIGKILL after a run ended, while its webhook POST is in flight, delivers
  it after a restart (at least once: the same delivery id arrives again).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from runplane.core.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests._services import drop_postgres_database, fresh_postgres_database, postgres_url
from tests.e2e._procs import RUNPLANE, Proc, free_port, wait_until
from tests.e2e._receiver import receiver

pytestmark = pytest.mark.slow

SECRET = "processes-secret"
TICK: dict[str, Any] = {"messages": [{"role": "user", "content": "tick"}]}
FIRED = re.compile(r"cron (\S+): slot (\S+) fired run (\S+)")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    base = postgres_url()
    if base is None:
        pytest.skip("postgres: RUNPLANE_TEST_POSTGRES_URL is not set")
    url = fresh_postgres_database(base)
    try:
        yield url
    finally:
        drop_postgres_database(url)


def server(name: str, directory: Path, database_url: str, **env: str) -> Proc:
    port = free_port()
    argv = [*RUNPLANE, "serve", "--database-url", database_url, "--port", str(port), "--workers", "2"]
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")},
        "PYTHONUNBUFFERED": "1",
        "RUNPLANE_WEBHOOK_SECRET": SECRET,
        "RUNPLANE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        **env,
    }
    return Proc(name, "api", argv, environ, directory, port=port)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


def fired_slots(*servers: Proc) -> list[tuple[str, str, str]]:
    return [m.groups() for proc in servers for m in FIRED.finditer(proc.log_text())]  # type: ignore[misc]


async def test_two_schedulers_fire_each_slot_exactly_once(
    tmp_path: Path, database_url: str, procs: list[Proc]
) -> None:
    first = server("a", tmp_path, database_url)
    second = server("b", tmp_path, database_url)
    procs += [first, second]
    first.start()
    first.wait_ready(60)
    tag = str(uuid.uuid4())
    a, b = get_client(url=first.url, api_key=None), get_client(url=second.url, api_key=None)
    try:
        # Several crons due at once: each scheduler reads the due list, then fires them one by
        # one, so the two interleave and race on every cron of every slot.
        # The SDK types a cron as a `Run`.
        crons: list[dict[str, Any]] = [
            await a.crons.create(  # type: ignore[misc]
                "echo",
                schedule="* * * * * *",  # every second
                input=TICK,
                metadata={"probe": tag},
                on_run_completed="keep",
            )
            for _ in range(4)
        ]
        # Started after the crons exist, it reads their next slot at once (a hint from the first
        # process's in-memory bus would not reach it).
        second.start()
        second.wait_ready(60)
        wait_until(lambda: len(fired_slots(second)) >= 8, 90, "the second scheduler to fire too")
        for cron in crons:
            await b.crons.update(cron["cron_id"], enabled=False)  # no slot fires after this commits
        ids = {cron["cron_id"] for cron in crons}
        fired = [f for f in fired_slots(first, second) if f[0] in ids]
        slots = [(cron_id, slot) for cron_id, slot, _ in fired]
        assert len(slots) == len(set(slots)), f"a slot fired twice: {sorted(slots)}"
        threads = await a.threads.search(metadata={"probe": tag}, limit=1000)
        assert len(threads) == len(fired)
        run_ids = set()
        for thread in threads:
            runs = await a.runs.list(thread["thread_id"])
            assert len(runs) == 1
            run_ids.add(runs[0]["run_id"])
        assert run_ids == {run_id for _, _, run_id in fired}
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_webhook_in_flight_when_the_process_is_killed_arrives_after_restart(
    tmp_path: Path, database_url: str, procs: list[Proc]
) -> None:
    async with receiver() as hooks:
        proc = server("solo", tmp_path, database_url, RUNPLANE_WEBHOOK_LEASE_SECONDS="2")
        procs.append(proc)
        proc.start()
        proc.wait_ready(60)
        client = get_client(url=proc.url, api_key=None)
        try:
            thread = await client.threads.create()
            hooks.hold = object()  # hold every POST open
            run = await client.runs.wait(
                thread["thread_id"], "echo", input={"messages": []}, webhook=f"{hooks.url}/done"
            )
            assert run is not None
            [held] = await hooks.wait_for(1)  # the POST is in flight, unanswered
        finally:
            await client.aclose()
        proc.kill()  # SIGKILL between the run's end (durable) and the webhook's success
        hooks.hold = None
        proc.start()
        proc.wait_ready(60)
        first, again = await hooks.wait_for(2, timeout=60)
        assert first is held
        assert again.headers[DELIVERY_HEADER.lower()] == held.headers[DELIVERY_HEADER.lower()]
        assert again.json["run_id"] == held.json["run_id"] and again.json["status"] == "success"
        assert verify(
            SECRET,
            again.headers[TIMESTAMP_HEADER.lower()],
            again.body,
            again.headers[SIGNATURE_HEADER.lower()],
        )
