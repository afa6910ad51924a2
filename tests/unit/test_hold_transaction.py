"""The attempt hold offered to the checkpoint write it fences (`db.postgres`): only to the task that
entered the hold, only while it lasts, only for the same database."""

from __future__ import annotations

import asyncio

import pytest

from runplane.db.postgres import (
    HoldTransaction,
    hold_checks_at_commit,
    joinable_hold,
    offer_hold,
    same_database,
    writing_only_through_hold,
)

DB = "host=127.0.0.1 port=5432 dbname=app user=rp"
OTHER = "host=127.0.0.1 port=5432 dbname=other user=rp"


async def test_the_hold_is_the_holding_tasks_only_and_only_while_it_lasts() -> None:
    with offer_hold(DB) as hold:
        assert joinable_hold(DB) is hold
        assert joinable_hold(OTHER) is None
        # A task started inside copies the context, and may outlive the hold: it never joins it.
        assert await asyncio.create_task(_joinable_in_task()) is None
        hold.defer("SELECT %s", (1,))
    assert joinable_hold(DB) is None
    with pytest.raises(RuntimeError, match="ended"):
        hold.defer("SELECT 2")  # e.g. kept by a task started inside
    assert hold.deferred == [("SELECT %s", (1,))]


async def _joinable_in_task() -> HoldTransaction | None:
    return joinable_hold(DB)


def test_a_hold_checks_at_commit_only_where_its_writer_declared_so() -> None:
    assert not hold_checks_at_commit(DB)
    with writing_only_through_hold(DB):
        assert hold_checks_at_commit(DB)
        assert not hold_checks_at_commit(OTHER)
    assert not hold_checks_at_commit(DB)


def test_same_database_compares_server_database_and_user() -> None:
    assert same_database(DB, "postgresql://rp@127.0.0.1:5432/app")
    assert same_database(DB, "postgresql://rp@127.0.0.1:5432/app?sslmode=disable")
    assert not same_database(DB, "postgresql://rp@127.0.0.1:5433/app")
    assert not same_database(DB, "postgresql://other@127.0.0.1:5432/app")
