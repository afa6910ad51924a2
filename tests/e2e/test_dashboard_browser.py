"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
`runplane serve` with API keys. The page asks for the key, a run appears, its events stream live
over the API's SSE, and the Interrupt and Rollback buttons cancel it. A failing test leaves a
screenshot next to its temporary files (the path is in the failure message).

No browser is ever downloaded: Playwright launches `/usr/bin/chromium` (`scripts/test.sh` installs
it with apt when missing). Without it the tests skip, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import Config

from tests.e2e._procs import free_port, wait_until

CHROMIUM = Path(os.environ.get("RUNPLANE_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Set to a file path to also save a screenshot of the dashboard with live runs (docs/).
SCREENSHOT_ENV = "RUNPLANE_TEST_DASHBOARD_SCREENSHOT"
KEY = "sk-dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Long enough to watch and cancel (LangGraph counts every step against the recursion limit).
SLOW = {"steps": 300, "delay": 0.1}
SLOW_CONFIG: Config = {"recursion_limit": 1000}
#: Generous bound for what the page shows after polling (1.5 s) on a busy machine.
SHOWN_MS = 20_000

pytestmark = pytest.mark.slow

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]


def _require_browser() -> None:
    missing = []
    if sync_playwright is None:
        missing.append("playwright (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium; scripts/test.sh does it)")
    if not missing:
        return
    message = "browser tests need " + " and ".join(missing)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + ": in CI they must run")
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_browser()
    directory = tmp_path_factory.mktemp("dashboard")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPLANE_")}
    env.update(PYTHONUNBUFFERED="1", RUNPLANE_API_KEYS=f"{KEY}:operator")
    log = directory / "server.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*[sys.executable, "-m", "runplane.cli"], "serve", "--port", str(port), "--workers", "4"],
            cwd=directory,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"runplane serve exited:\n{log.read_text()}")
        try:
            return httpx.get(f"{url}/ok", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, "runplane serve to start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def page(server: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh profile for every test
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page
        finally:
            context.close()
        assert not errors, f"the page raised: {errors}"


@contextlib.contextmanager
def screenshot_on_failure(page: Page, tmp_path: Path) -> Iterator[None]:
    """A failure inside saves a screenshot of the page and names it in the message."""
    try:
        yield
    except Exception as exc:
        shot = tmp_path / "failure.png"
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{exc}\n(screenshot of the dashboard: {shot})") from exc


def _sign_in(page: Page, server: str) -> None:
    page.goto(f"{server}/ui")
    # Without a key the API answers 401, and the page asks for one.
    expect(page.locator("#key-panel")).to_be_visible(timeout=SHOWN_MS)
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#main")).to_be_visible()
    # The key lives in this tab's session only.
    assert page.evaluate("sessionStorage.getItem('runplane.apiKey')") == KEY


def _start_slow_run(server: str, **metadata: str) -> tuple[str, str]:
    client = get_sync_client(url=server, api_key=KEY)
    thread = client.threads.create(metadata=metadata)
    run = client.runs.create(
        thread["thread_id"], "slow", input=SLOW, config=SLOW_CONFIG, stream_mode=["values", "custom"]
    )
    return thread["thread_id"], run["run_id"]


def test_watch_a_run_live_and_interrupt_it(page: Page, server: str, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        _sign_in(page, server)
        expect(page.locator("#assistants li", has_text="slow")).to_have_count(1, timeout=SHOWN_MS)
        thread_id, run_id = _start_slow_run(server, owner_team="browser-test")

        # The run appears: its thread in the list (found by search), then the run, running.
        page.fill("#thread-search", thread_id[:8])
        thread_row = page.locator(f"#threads tr[data-thread-id='{thread_id}']")
        expect(thread_row).to_be_visible(timeout=SHOWN_MS)
        thread_row.click()
        run_row = page.locator(f"#runs tr[data-run-id='{run_id}']")
        expect(run_row.locator("td.status")).to_have_text("running", timeout=SHOWN_MS)
        expect(run_row.locator("td").nth(3)).to_have_text("1")  # attempts
        # The queue at a glance, from the database: at least this run is running.
        expect(page.locator("#queue-running")).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=SHOWN_MS)

        # Its events stream live: custom step events keep arriving while we watch.
        run_row.locator("button.watch").click()
        expect(page.locator("#events-state")).to_have_text("live", timeout=SHOWN_MS)
        custom = page.locator("#events li[data-event='custom']")
        expect(custom.nth(2)).to_be_visible(timeout=SHOWN_MS)
        seen = custom.count()
        expect(custom.nth(seen + 1)).to_be_visible(timeout=SHOWN_MS)  # still coming: live
        assert '"step"' in (custom.first.text_content() or "")

        # Cancel it: the run stops, is reported interrupted, and its stream ends.
        run_row.locator("button.cancel-interrupt").click()
        expect(run_row.locator("td.status")).to_have_text("interrupted", timeout=SHOWN_MS)
        expect(page.locator("#events-state")).to_have_text("ended", timeout=SHOWN_MS)
        expect(run_row.locator("button.cancel-interrupt")).to_have_count(0)
        client = get_sync_client(url=server, api_key=KEY)
        assert client.runs.get(thread_id, run_id)["status"] == "interrupted"


def test_rollback_deletes_the_run(page: Page, server: str, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        _sign_in(page, server)
        thread_id, run_id = _start_slow_run(server)
        page.select_option("#thread-status", "busy")
        page.locator(f"#threads tr[data-thread-id='{thread_id}']").click(timeout=SHOWN_MS)
        run_row = page.locator(f"#runs tr[data-run-id='{run_id}']")
        expect(run_row.locator("td.status")).to_have_text("running", timeout=SHOWN_MS)
        run_row.locator("button.cancel-rollback").click()
        expect(run_row).to_have_count(0, timeout=SHOWN_MS)  # rolled back runs are deleted
        client = get_sync_client(url=server, api_key=KEY)
        assert client.runs.list(thread_id) == []


def test_a_wrong_key_is_asked_again(page: Page, server: str, tmp_path: Path) -> None:
    with screenshot_on_failure(page, tmp_path):
        page.goto(f"{server}/ui/")
        expect(page.locator("#key-panel")).to_be_visible(timeout=SHOWN_MS)
        page.fill("#api-key", "not-the-key")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-panel")).to_be_visible(timeout=SHOWN_MS)
        expect(page.locator("#key-message")).to_have_text("This server needs an API key.")
        assert page.evaluate("sessionStorage.getItem('runplane.apiKey')") == "not-the-key"


@pytest.mark.skipif(not os.environ.get(SCREENSHOT_ENV), reason=f"set {SCREENSHOT_ENV}=path.png to take it")
def test_docs_screenshot(page: Page, server: str, tmp_path: Path) -> None:
    """The picture in docs/: a thread whose chat run finished (tokens, model) and whose next run
    streams live, among other threads with live runs."""
    client = get_sync_client(url=server, api_key=KEY)
    for team in ("support", "billing"):
        _start_slow_run(server, team=team)
    thread = client.threads.create(metadata={"team": "research"})
    client.runs.wait(
        thread["thread_id"],
        "chat",
        input=cast(dict[str, Any], {"messages": [{"role": "user", "content": "summarize the logs"}]}),
    )
    run = client.runs.create(
        thread["thread_id"], "slow", input=SLOW, config=SLOW_CONFIG, stream_mode=["values", "custom"]
    )
    with screenshot_on_failure(page, tmp_path):
        _sign_in(page, server)
        page.locator(f"#threads tr[data-thread-id='{thread['thread_id']}']").click(timeout=SHOWN_MS)
        run_row = page.locator(f"#runs tr[data-run-id='{run['run_id']}']")
        expect(run_row.locator("td.status")).to_have_text("running", timeout=SHOWN_MS)
        run_row.locator("button.watch").click()
        expect(page.locator("#events li[data-event='custom']").nth(6)).to_be_visible(timeout=SHOWN_MS)
        expect(page.locator("#queue-running")).to_have_text("3", timeout=SHOWN_MS)
        page.screenshot(path=os.environ[SCREENSHOT_ENV])
