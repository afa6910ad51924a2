"""Pure rules of the core the other unit tests leave aside: the thread config after an admission,
the webhook body's error, token sums, metadata merges and stream-mode iteration."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from runplane.core.lifecycle import thread_config_after_admission, webhook_payload
from runplane.core.models import Run, TokenUsage, metadata_after_admission
from runplane.core.stream_modes import StreamModes

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _failed(status: str, error: str | None) -> Run:
    run = Run(
        run_id="r",
        thread_id="t",
        assistant_id="a",
        owner="",
        status="success",
        multitask_strategy="enqueue",
        created_at=T0,
        updated_at=T0,
    )
    return replace(run, status=status, error=error)  # type: ignore[arg-type]


def test_a_thread_keeps_its_own_configurable_over_the_runs() -> None:
    current = {"tags": ["old"], "configurable": {"user": "thread", "model": "m"}}
    run_config = {"tags": ["new"], "recursion_limit": 5, "configurable": {"user": "run", "temperature": 1}}
    assert thread_config_after_admission(current, run_config) == {
        "tags": ["new"],
        "recursion_limit": 5,
        "configurable": {"user": "thread", "temperature": 1, "model": "m"},
    }
    assert thread_config_after_admission({}, {}) == {"configurable": {}}


def test_the_webhook_error_names_the_exception_when_the_text_does() -> None:
    assert webhook_payload(_failed("error", "ValueError: boom"), None)["error"] == {
        "error": "ValueError",
        "message": "boom",
    }
    assert webhook_payload(_failed("error", "my.pkg.Failure: x: y"), None)["error"] == {
        "error": "my.pkg.Failure",
        "message": "x: y",
    }
    assert webhook_payload(_failed("error", "it broke, sorry: no"), None)["error"] == {
        "error": "Error",
        "message": "it broke, sorry: no",
    }
    assert webhook_payload(_failed("timeout", "took 30 s"), None)["error"] == {
        "error": "TimeoutError",
        "message": "took 30 s",
    }


def test_token_usage_adds_up() -> None:
    total = TokenUsage(1, 2, 3) + TokenUsage(10, 20, 30)
    assert total == TokenUsage(11, 22, 33)
    assert total.as_dict() == {"input_tokens": 11, "output_tokens": 22, "total_tokens": 33}


def test_an_admission_writes_metadata_only_when_it_changes_it() -> None:
    current = {"graph_id": "agent", "user": "u"}
    assert metadata_after_admission(current, {"graph_id": "agent"}) is None
    assert metadata_after_admission(current, {}) is None
    assert metadata_after_admission(current, {"graph_id": "echo"}) == {"graph_id": "echo", "user": "u"}
    assert metadata_after_admission(current, {"assistant_id": "a"}) == {**current, "assistant_id": "a"}


def test_stream_modes_iterate_in_order_without_repeats() -> None:
    modes = StreamModes.parse(["updates", "values", "updates"], required=["values", "custom"])
    assert list(modes) == ["updates", "values", "custom"]
    assert list(StreamModes.parse(None)) == ["values"]
    assert list(StreamModes.parse("")) == ["values"]
