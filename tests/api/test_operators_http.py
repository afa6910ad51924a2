"""`/metrics` (authentication, route templates), the operators' endpoints and the dashboard's files,
in-process over the real app."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runplane.api import ApiSettings, create_app
from runplane.api.metrics import PrometheusMetrics
from runplane.core.manager import RunManager
from runplane.testing import memory_manager
from tests.api.conftest import api_runtime, api_worker

BASE_URL = "http://runplane.test"
KEYS = {"sk-alice": "alice", "sk-bob": "bob"}
ALICE = {"x-api-key": "sk-alice"}
BOB = {"x-api-key": "sk-bob"}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` in an exposition, by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def _client(manager: RunManager, settings: ApiSettings) -> httpx.AsyncClient:
    app = create_app(manager, api_runtime(), settings)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)


@pytest.fixture
def manager() -> RunManager:
    return memory_manager()


@pytest.fixture
def metrics() -> PrometheusMetrics:
    return PrometheusMetrics(process="api-1")


@pytest.fixture
async def keyed(manager: RunManager, metrics: PrometheusMetrics) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(manager, ApiSettings(api_keys=KEYS, metrics=metrics)) as client:
        yield client


async def test_metrics_are_protected_like_the_api(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/metrics")).status_code == 401
    assert (await keyed.get("/metrics", headers={"x-api-key": "wrong"})).status_code == 401
    answer = await keyed.get("/metrics", headers=ALICE)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    families = {f.name for f in text_string_to_metric_families(answer.text)}
    assert {"runplane_runs_created", "runplane_queue_depth", "runplane_http_requests"} <= families


async def test_a_setting_opens_metrics(manager: RunManager, metrics: PrometheusMetrics) -> None:
    settings = ApiSettings(api_keys=KEYS, metrics=metrics, metrics_public=True)
    async with _client(manager, settings) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.post("/threads/search", json={})).status_code == 401  # only /metrics


async def test_no_metrics_route_without_metrics(manager: RunManager) -> None:
    async with _client(manager, ApiSettings()) as client:
        assert (await client.get("/metrics")).status_code == 404


async def test_http_requests_by_route_template_and_status(keyed: httpx.AsyncClient) -> None:
    thread = (await keyed.post("/threads", json={}, headers=ALICE)).json()
    for _ in range(3):
        assert (await keyed.get(f"/threads/{thread['thread_id']}", headers=ALICE)).status_code == 200
    assert (await keyed.get(f"/threads/{uuid.uuid4()}", headers=ALICE)).status_code == 404
    assert (await keyed.get(f"/threads/{thread['thread_id']}", headers=BOB)).status_code == 404
    assert (await keyed.get("/threads/whatever")).status_code == 401
    text = (await keyed.get("/metrics", headers=ALICE)).text
    requests = samples(text, "runplane_http_requests_total")

    def count(method: str, route: str, status: str) -> float:
        labels = {"method": method, "route": route, "status": status, "process": "api-1"}
        return requests.get(tuple(sorted(labels.items())), 0.0)

    assert count("GET", "/threads/{thread_id}", "200") == 3
    assert count("GET", "/threads/{thread_id}", "404") == 2  # unknown and foreign alike
    assert count("POST", "/threads", "200") == 1
    # Refused before routing: no template, and no thread id in any label.
    assert count("GET", "unmatched", "401") == 1
    assert not any(thread["thread_id"] in str(labels) for labels in requests)


async def test_queue_gauges_come_from_the_store(
    keyed: httpx.AsyncClient, manager: RunManager, metrics: PrometheusMetrics
) -> None:
    for _ in range(2):
        thread = (await keyed.post("/threads", json={}, headers=BOB)).json()
        created = await keyed.post(
            f"/threads/{thread['thread_id']}/runs", json={"assistant_id": "echo"}, headers=BOB
        )
        assert created.status_code == 200
    text = (await keyed.get("/metrics", headers=ALICE)).text  # Alice sees the queue's numbers only
    assert samples(text, "runplane_queue_depth") == {(): 2.0}
    assert samples(text, "runplane_active_runs") == {(): 0.0}
    assert (await keyed.get("/runplane/queue", headers=ALICE)).json() == {
        "pending": 2,
        "running": 0,
        "busy_workers": 0,
    }


async def test_run_details_show_attempts_usage_and_stay_private(manager: RunManager) -> None:
    worker = api_worker(manager, api_runtime())
    await worker.start()
    try:
        async with _client(manager, ApiSettings(api_keys=KEYS)) as client:
            thread = (await client.post("/threads", json={}, headers=ALICE)).json()
            path = f"/threads/{thread['thread_id']}/runs"
            body = {"assistant_id": "echo", "input": {"n": 1}}
            run = (await client.post(f"{path}/wait", json=body, headers=ALICE)).json()
            assert run is not None
            [details] = (await client.get(f"/runplane{path}", headers=ALICE)).json()
            assert details["status"] == "success" and details["attempt"] == 1
            assert details["started_at"] is not None and details["ended_at"] is not None
            assert set(details["usage"]) == {"input_tokens", "output_tokens", "total_tokens"}
            assert (await client.get(f"/runplane{path}", headers=BOB)).status_code == 404
            assert (await client.get(f"/runplane{path}")).status_code == 401
    finally:
        await worker.stop()


async def test_the_dashboard_is_served_without_a_key(keyed: httpx.AsyncClient) -> None:
    redirect = await keyed.get("/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    page = await keyed.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<script src="app.js"' in page.text
    script = await keyed.get("/ui/app.js")
    assert script.status_code == 200 and "sessionStorage" in script.text
    # Only the shipped files are served; anything else under /ui/ is not (refused or not found).
    assert (await keyed.get("/ui/secrets.txt")).status_code in (401, 404)
    assert (await keyed.get("/ui/secrets.txt", headers=ALICE)).status_code == 404
    assert (await keyed.get("/ui/..%2F__init__.py", headers=ALICE)).status_code == 404
