"""Settings come from RUNPLANE_* variables and flags, and bad values are refused with clear words."""

from __future__ import annotations

import pytest

from runplane.cli import bus_url, redact
from runplane.core.errors import InvalidInput
from runplane.settings import DEFAULT_PORT, Settings, settings_from_env


def test_defaults_are_the_embedded_store_on_loopback_off_port_2024() -> None:
    settings = settings_from_env({})
    assert settings.database_url == "sqlite:///./runplane.db"
    assert settings.host == "127.0.0.1"
    assert settings.port == DEFAULT_PORT != 2024


def test_environment_variables_are_typed() -> None:
    settings = settings_from_env(
        {"RUNPLANE_PORT": "9000", "RUNPLANE_WORKERS": "3", "RUNPLANE_DEFAULT_TIMEOUT": "2.5"}
    )
    assert (settings.port, settings.workers, settings.default_timeout) == (9000, 3, 2.5)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RUNPLANE_PORT": "eighty"}, "RUNPLANE_PORT"),
        ({"RUNPLANE_PORT": "70000"}, "out of range"),
        ({"RUNPLANE_DATABASE_URL": "mysql://x"}, "not supported"),
        ({"RUNPLANE_REDIS_URL": "http://x"}, "redis://"),
        ({"RUNPLANE_WORKERS": "-1"}, "workers"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        settings_from_env(environ)


def test_flags_override_environment_but_none_keeps_it() -> None:
    settings = settings_from_env({"RUNPLANE_PORT": "9000"}).with_overrides(port=None, workers=2)
    assert (settings.port, settings.workers) == (9000, 2)


def test_the_bus_follows_the_database_unless_redis_is_given() -> None:
    assert bus_url(Settings()) == "memory://"
    assert bus_url(Settings(database_url="postgresql://u@h/db")) == "postgresql://u@h/db"
    assert bus_url(Settings(database_url="postgresql://u@h/db", redis_url="redis://r")) == "redis://r"


def test_passwords_never_reach_banners() -> None:
    assert redact("postgresql://user:secret@host/db") == "postgresql://user:***@host/db"
    assert redact("sqlite:///./runplane.db") == "sqlite:///./runplane.db"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("false", False), ("NO", False)],
)
def test_boolean_variables_take_the_usual_words(raw: str, expected: bool) -> None:
    assert settings_from_env({"RUNPLANE_METRICS_PUBLIC": raw}).metrics_public is expected


@pytest.mark.parametrize("raw", ["ture", "enabled", "2"])
def test_an_unknown_boolean_word_is_refused_not_read_as_false(raw: str) -> None:
    with pytest.raises(InvalidInput, match="RUNPLANE_INSECURE_ALLOW_NO_AUTH"):
        settings_from_env({"RUNPLANE_INSECURE_ALLOW_NO_AUTH": raw})
