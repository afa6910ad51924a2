"""`StreamModes`: parsed once from what a request gives, read as a value after."""

from __future__ import annotations

import pytest

from runplane.core.stream_modes import StreamModes


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (None, ("values",)),
        ([], ("values",)),
        ([""], ("values",)),
        ("updates", ("updates",)),
        (["messages-tuple", "updates", "messages-tuple"], ("messages-tuple", "updates")),
    ],
)
def test_parse_defaults_and_deduplicates_in_order(
    requested: str | list[str] | None, expected: tuple[str, ...]
) -> None:
    assert StreamModes.parse(requested).names == expected


def test_required_modes_come_after_the_requested_ones() -> None:
    assert StreamModes.parse(["updates"], required=("values",)).to_json() == ["updates", "values"]
    assert StreamModes.parse(["values"], required=("values",)).to_json() == ["values"]


def test_a_filter_without_modes_is_empty() -> None:
    assert not StreamModes.parse(None, default=())
    assert not StreamModes.parse(["", ""], default=())


def test_langgraph_modes_map_the_sdks_names() -> None:
    modes = StreamModes.parse(["messages-tuple", "events", "values", "custom"])
    assert modes.langgraph() == ["custom", "messages", "values"]
    assert "events" in modes and "updates" not in modes


def test_accepts_the_events_each_mode_produces() -> None:
    modes = StreamModes.parse(["messages", "updates"])
    assert modes.accepts("messages/partial") and modes.accepts("updates|child:1")
    assert modes.accepts("error") and modes.accepts("end")
    assert not modes.accepts("values") and not modes.accepts("metadata") and not modes.accepts("messages")
