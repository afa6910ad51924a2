"""`RunKwargs`: one typed value, stored as the JSON the API always stored (issue 16)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from runplane.core.errors import InvalidInput
from runplane.core.models import Run
from runplane.core.run_kwargs import RunKwargs
from runplane.core.stream_modes import StreamModes

#: A row as the API wrote it before `RunKwargs` was a type (every key it ever wrote).
STORED: dict[str, Any] = {
    "graph_id": "agent",
    "stream_mode": ["values", "updates"],
    "input": {"messages": [{"role": "user", "content": "hi"}]},
    "config": {"tags": ["t"], "configurable": {"x": 1}},
    "context": {"tone": "dry"},
    "assistant_version": 3,
    "stream_subgraphs": True,
    "stream_resumable": True,
    "interrupt_before": ["tools"],
    "interrupt_after": "*",
    "webhook": "https://hooks.example.com/done",
    "feedback_keys": ["score"],
    "durability": "exit",
    "checkpoint": {"checkpoint_id": "c1", "checkpoint_ns": ""},
    "checkpoint_id": "c1",
    "temporary": True,
}


def test_a_stored_row_reads_back_and_is_stored_unchanged() -> None:
    kwargs = RunKwargs.from_json(STORED)
    assert kwargs.graph_id == "agent" and kwargs.assistant_version == 3
    assert kwargs.stream_mode == StreamModes(("values", "updates"))
    assert kwargs.interrupt_before == ["tools"] and kwargs.interrupt_after == "*"
    assert kwargs.durability == "exit" and kwargs.temporary is True
    assert kwargs.to_json() == STORED
    assert RunKwargs.parse(STORED) == kwargs


def test_only_what_was_given_is_stored() -> None:
    assert RunKwargs().to_json() == {"stream_mode": ["values"]}
    assert RunKwargs(graph_id="g", input={"n": 1}).to_json() == {
        "graph_id": "g",
        "input": {"n": 1},
        "stream_mode": ["values"],
    }


def test_old_rows_with_keys_no_longer_written_still_read() -> None:
    # `timeout_seconds` was read but never written by the API; it is gone, and such a row still reads.
    kwargs = RunKwargs.from_json({"input": {}, "timeout_seconds": 5, "stream_mode": "custom"})
    assert kwargs.input == {} and kwargs.stream_mode == StreamModes(("custom",))
    assert "timeout_seconds" not in kwargs.to_json()


@pytest.mark.parametrize(
    "bad",
    [
        {"timeout_seconds": 5},
        {"unknown": 1},
        {"webhook": 7},
        {"durability": "later"},
        {"stream_mode": [1]},
        {"interrupt_before": "tools"},
        {"assistant_version": True},
        {"temporary": "yes"},
        {"config": []},
    ],
)
def test_a_caller_of_the_manager_is_told_what_is_wrong(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        RunKwargs.parse(bad)
    RunKwargs.from_json(bad)  # a stored row never fails to read


def test_a_run_reads_the_stored_json_and_copies_like_a_record() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    run = Run("r", "t", "a", "", "pending", "enqueue", at, at, kwargs=STORED)  # type: ignore[arg-type]
    assert isinstance(run.kwargs, RunKwargs) and run.kwargs.webhook == STORED["webhook"]
    copied = copy.deepcopy(run.kwargs)
    assert copied == run.kwargs and copied.config is not run.kwargs.config
    with pytest.raises(AttributeError):
        run.kwargs.webhook = "https://elsewhere.example.com"  # type: ignore[misc]
