"""Fixtures shared by every test tier. Keep this small: tier folders have their own conftest."""

from __future__ import annotations

import os

import pytest

#: Variables the test harness sets on purpose (service URLs, knobs); everything else RUNPLANE_* is
#: the developer's environment and must not change what a test sees.
_KEEP_PREFIX = "RUNPLANE_TEST_"


@pytest.fixture(autouse=True)
def _clean_runplane_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip `RUNPLANE_*` settings (except `RUNPLANE_TEST_*`) so local config never leaks into a test."""
    for name in list(os.environ):
        if name.startswith("RUNPLANE_") and not name.startswith(_KEEP_PREFIX):
            monkeypatch.delenv(name)
