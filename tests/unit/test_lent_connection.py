"""The attempt hold's connection lent to the checkpoint write it fences (`db.postgres`): only the
task that entered the hold, only while it lasts, only for the same database."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runplane.db.postgres import lend_connection, lent_connection, same_database

DB = "host=127.0.0.1 port=5432 dbname=app user=rp"


async def test_the_lent_connection_is_the_holding_tasks_only_and_only_while_held() -> None:
    connection = cast(Any, object())
    with lend_connection(DB, connection):
        assert lent_connection(DB) is connection
        assert lent_connection("host=127.0.0.1 port=5432 dbname=other user=rp") is None
        # A task started inside copies the context, and may outlive the hold: it never gets it.
        assert await asyncio.create_task(_lent_in_task()) is None
    assert lent_connection(DB) is None


async def _lent_in_task() -> object:
    return lent_connection(DB)


def test_same_database_compares_server_database_and_user() -> None:
    assert same_database(DB, "postgresql://rp@127.0.0.1:5432/app")
    assert same_database(DB, "postgresql://rp@127.0.0.1:5432/app?sslmode=disable")
    assert not same_database(DB, "postgresql://rp@127.0.0.1:5433/app")
    assert not same_database(DB, "postgresql://other@127.0.0.1:5432/app")
