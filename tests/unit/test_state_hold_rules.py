"""The pure rules of a state update's hold on its thread (`core.lifecycle`), and the state it records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runplane.core.errors import ThreadBusy, ThreadReserved
from runplane.core.lifecycle import (
    check_not_reserved,
    reservation_holds,
    reserve_plan,
    thread_status_after,
    thread_status_of_state,
)
from runplane.core.state_updates import interrupts_of, state_write

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_hold_lasts_until_its_instant() -> None:
    assert reservation_holds(NOW + timedelta(microseconds=1), NOW)
    assert not reservation_holds(NOW, NOW)
    assert not reservation_holds(None, NOW)


def test_admission_is_turned_away_only_by_a_valid_hold() -> None:
    with pytest.raises(ThreadReserved):
        check_not_reserved("t1", NOW + timedelta(seconds=1), NOW)
    check_not_reserved("t1", NOW - timedelta(seconds=1), NOW)
    check_not_reserved("t1", None, NOW)


def test_an_update_may_hold_only_a_free_thread() -> None:
    with pytest.raises(ThreadBusy) as busy:
        reserve_plan(True, None, NOW)
    assert not isinstance(busy.value, ThreadReserved)  # the caller gets a 409, nobody waits on it
    with pytest.raises(ThreadBusy):
        reserve_plan(False, NOW + timedelta(seconds=1), NOW)
    reserve_plan(False, NOW, NOW)  # an expired hold is taken over
    reserve_plan(False, None, NOW)


@pytest.mark.parametrize("has_next", [False, True])
def test_the_status_after_an_update_is_the_status_after_a_run(has_next: bool) -> None:
    assert thread_status_of_state(has_next) == thread_status_after("success", has_next=has_next)
    assert thread_status_of_state(has_next) == ("interrupted" if has_next else "idle")


def test_the_recorded_state_of_an_interrupted_graph() -> None:
    state = {
        "values": {"n": 1},
        "next": ["ask"],
        "tasks": [{"id": "t", "interrupts": [{"value": "?"}]}, {"id": "u", "interrupts": []}],
    }
    assert interrupts_of(state) == {"t": [{"value": "?"}]}
    written = state_write(state)
    assert (written.values, written.interrupts, written.status) == (
        {"n": 1},
        {"t": [{"value": "?"}]},
        "interrupted",
    )
    assert state_write({"values": [1], "next": [], "tasks": []}).values is None  # a list is no thread value
    assert state_write({"values": {}, "next": [], "tasks": []}).status == "idle"
