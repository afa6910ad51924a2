"""`runplane serve` runs on the event loop `RUNPLANE_EVENT_LOOP` chooses (uvloop is a dev dependency)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from runplane.api.server import event_loop_factory, run_server
from runplane.settings import settings_from_env


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_when_installed(choice: str) -> None:
    assert event_loop_factory(choice) is uvloop.new_event_loop
    assert issubclass(run_server(_loop_type(), choice), uvloop.Loop)


def test_asyncio_opts_out() -> None:
    assert event_loop_factory("asyncio") is None
    assert not issubclass(run_server(_loop_type(), "asyncio"), uvloop.Loop)


def test_the_variable_reaches_the_setting() -> None:
    assert settings_from_env({"RUNPLANE_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
