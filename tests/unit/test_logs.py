"""`--log-format json`: one object per line, with the run of the task that wrote it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from runplane.core.models import Run
from runplane.core.observe import bind_run
from runplane.logs import JsonFormatter, configure_logging


def _run(run_id: str, attempt: int = 2) -> Run:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Run(
        run_id=run_id,
        thread_id=f"thread-of-{run_id}",
        assistant_id="agent",
        owner="",
        status="running",
        multitask_strategy="enqueue",
        created_at=now,
        updated_at=now,
        attempt=attempt,
    )


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("runplane.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


async def test_records_carry_the_run_of_their_task(captured: io.StringIO) -> None:
    logger = logging.getLogger("runplane.test.logs")

    async def execute(run: Run) -> None:
        bind_run(run, "host:1:w")
        logger.info("inside %s", run.run_id)
        await asyncio.create_task(child())  # tasks the run starts inherit its context

    async def child() -> None:
        await asyncio.sleep(0)
        logger.warning("from a child task", extra={"action": "step"})

    await asyncio.gather(execute(_run("r1")), execute(_run("r2", attempt=3)))
    logger.info("outside any run")

    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert len(records) == 5
    by_message = {(r["message"], r.get("run_id")): r for r in records}
    inside = by_message[("inside r2", "r2")]
    assert inside["thread_id"] == "thread-of-r2" and inside["attempt"] == 3
    assert inside["worker_id"] == "host:1:w" and inside["level"] == "INFO"
    children = [r for r in records if r["message"] == "from a child task"]
    assert sorted(r["run_id"] for r in children) == ["r1", "r2"]
    assert all(r["action"] == "step" for r in children)
    [outside] = [r for r in records if r["message"] == "outside any run"]
    assert "run_id" not in outside


def test_exceptions_are_one_line_of_json(captured: io.StringIO) -> None:
    logger = logging.getLogger("runplane.test.logs")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        logger.exception("failed")
    [line] = captured.getvalue().splitlines()
    record = json.loads(line)
    assert record["message"] == "failed" and "ValueError: multi\nline" in record["exc_info"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json"):
        configure_logging("INFO", "yaml")
