"""Settings come from RUNPLANE_* variables and flags, and bad values are refused with clear words."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from langgraph.graph import START, StateGraph
from pydantic import ValidationError

import runplane
from runplane import host
from runplane.api import server
from runplane.cli import bus_url, redact
from runplane.core.errors import InvalidInput
from runplane.db.postgres import parse_url
from runplane.settings import DEFAULT_PORT, Settings, settings_from_env, variable


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


# -- every knob, from its variable -------------------------------------------------------------------

#: A valid, non-default value for each setting whose type alone does not give one.
TEXT_SAMPLES: dict[str, tuple[str, Any]] = {
    "database_url": ("memory://", "memory://"),
    "redis_url": ("redis://r:6379/0", "redis://r:6379/0"),
    "host": ("0.0.0.0", "0.0.0.0"),
    "config": ("my/langgraph.json", "my/langgraph.json"),
    "log_level": ("debug", "DEBUG"),
    "log_format": ("json", "json"),
    "event_loop": ("asyncio", "asyncio"),
    "http_parser": ("h11", "h11"),
    "default_on_disconnect": ("cancel", "cancel"),
    "claim_retry_seconds": ("0.1, 0.3", (0.1, 0.3)),
    "api_keys": ("k1:alice", "k1:alice"),
    "api_keys_file": ("keys.json", "keys.json"),
    "cors_origins": ("https://app.example", "https://app.example"),
    "webhook_secret": ("s3cret", "s3cret"),
    "webhook_allow_hosts": ("10.0.0.0/8", "10.0.0.0/8"),
}


def sample(name: str) -> tuple[str, Any]:
    """A raw variable value for `name` and the value it must become (never the default)."""
    if name in TEXT_SAMPLES:
        return TEXT_SAMPLES[name]
    field = Settings.model_fields[name]
    kind = next(a for a in (*get_args(field.annotation), field.annotation) if a in (bool, int, float))
    default = field.default
    if kind is bool:
        return ("0", False) if default else ("1", True)
    if kind is int:
        value = 2 if default is None else default + 1
        return str(value), value
    value = 2.5 if default is None else default * 2 + 0.5
    return str(value), value


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_read_from_its_variable(name: str) -> None:
    raw, expected = sample(name)
    assert expected != Settings.model_fields[name].default
    settings = settings_from_env({variable(name): raw})
    assert getattr(settings, name) == expected


def test_variables_are_case_insensitive_and_empty_means_unset() -> None:
    settings = settings_from_env({"runplane_port": "9001", "RUNPLANE_WORKERS": ""})
    assert (settings.port, settings.workers) == (9001, Settings().workers)


def test_unrelated_and_unknown_variables_are_ignored() -> None:
    assert settings_from_env({"RUNPLANE_TEST_POSTGRES_URL": "x", "PORT": "1"}) == Settings()


#: Fields of free text: any string is a valid value.
FREE_TEXT = {"host", "config", "api_keys", "api_keys_file", "cors_origins", "webhook_secret"}


@pytest.mark.parametrize("name", [n for n in Settings.model_fields if n not in FREE_TEXT])
def test_a_bad_value_of_any_setting_is_refused_naming_its_variable(name: str) -> None:
    with pytest.raises(InvalidInput, match=variable(name)):
        settings_from_env({variable(name): "not:a valid/value!"})


@pytest.mark.parametrize(
    ("name", "raw"),
    [("lease_seconds", "0"), ("max_attempts", "0"), ("heartbeat_seconds", "-1"), ("metrics_port", "70000")],
)
def test_out_of_range_numbers_are_refused(name: str, raw: str) -> None:
    with pytest.raises(InvalidInput, match=variable(name)):
        settings_from_env({variable(name): raw})


def test_a_pool_smaller_than_its_minimum_is_refused() -> None:
    with pytest.raises(InvalidInput, match="RUNPLANE_POOL_MIN_SIZE=5 exceeds RUNPLANE_POOL_MAX_SIZE=2"):
        settings_from_env({"RUNPLANE_POOL_MIN_SIZE": "5", "RUNPLANE_POOL_MAX_SIZE": "2"})


def test_settings_built_in_code_are_checked_too_and_read_no_environment() -> None:
    with pytest.raises(InvalidInput, match="RUNPLANE_WORKERS"):
        Settings(workers=-1)
    with pytest.raises(InvalidInput, match="unknown setting 'wokers'"):
        Settings(wokers=2)
    with pytest.raises(InvalidInput, match="unknown settings: wokers"):
        Settings().with_overrides(wokers=2)
    # The embedding API's `Settings()` is the defaults, whatever this process's environment says.
    assert Settings().port == DEFAULT_PORT


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().port = 1


def test_secrets_are_not_in_the_repr() -> None:
    shown = repr(settings_from_env({"RUNPLANE_API_KEYS": "k1:alice", "RUNPLANE_WEBHOOK_SECRET": "s3cret"}))
    assert "k1:alice" not in shown and "s3cret" not in shown


# -- Settings -> the components (the composition root maps them in one place) --------------------------


def test_the_composition_root_maps_every_knob_onto_the_components() -> None:
    settings = settings_from_env({variable(name): sample(name)[0] for name in Settings.model_fields})
    manager = host.manager_settings(settings)
    assert (manager.lease_seconds, manager.max_attempts) == (settings.lease_seconds, settings.max_attempts)
    assert manager.wait_fallback_seconds == settings.wait_fallback_seconds
    assert manager.webhook_lease_seconds == settings.webhook_lease_seconds
    api = host.api_settings(settings)
    for name in ("max_body_bytes", "heartbeat_seconds", "default_on_disconnect", "docs", "ui"):
        assert getattr(api, name) == getattr(settings, name), name
    for name in ("max_wait_seconds", "max_json_depth", "max_header_bytes", "metrics_public"):
        assert getattr(api, name) == getattr(settings, name), name
    limits = host.server_limits(settings)
    assert limits["http"].header_timeout == settings.http_header_timeout
    assert limits["timeout_keep_alive"] == settings.http_keepalive_timeout
    assert limits["limit_concurrency"] == settings.http_max_connections
    assert issubclass(limits["http"], server.HeaderTimeoutH11Protocol)  # RUNPLANE_HTTP_PARSER=h11


def test_idle_connections_outlive_the_sdk_clients_own_keep_alive() -> None:
    """The client closes an idle connection first: were both to close it at once, a request sent
    on it as the server closes it would fail (`RemoteProtocolError`)."""
    client_expiry = httpx.Limits().keepalive_expiry  # what langgraph-sdk's httpx client keeps
    assert client_expiry is not None
    assert Settings().http_keepalive_timeout > client_expiry
    assert server.http_limits()["timeout_keep_alive"] > client_expiry


def test_pool_variables_become_the_database_urls_pool_parameters() -> None:
    url = "postgresql://u@h/db?pool_max_size=4&sslmode=require"
    settings = Settings(database_url=url, pool_max_size=7, pool_timeout=2.5)
    conninfo, pool = parse_url(host.database_url(settings))
    assert (pool.min_size, pool.max_size, pool.timeout) == (1, 7, 2.5)
    assert "sslmode=require" in conninfo and "pool_" not in conninfo
    assert host.database_url(Settings(database_url=url)) == url  # unset: the URL's own
    assert host.database_url(Settings(pool_max_size=7)) == Settings().database_url  # not PostgreSQL


async def test_the_worker_and_background_loops_get_their_knobs(tmp_path: Path) -> None:
    builder = StateGraph(dict)  # type: ignore[type-var]  # a plain dict state is enough here
    builder.add_node("noop", lambda state: {})
    builder.add_edge(START, "noop")
    settings = Settings(
        database_url="memory://",
        workers=2,
        lease_renew_seconds=1.5,
        recovery_seconds=2.5,
        poll_seconds=0.75,
        claim_retry_seconds=(0.1,),
        wait_fallback_seconds=0.5,
    )
    async with host.compose(settings, with_workers=True, graphs={"g": builder}, burst=True) as services:
        worker = services.worker
        assert worker is not None
        assert (worker.heartbeat_seconds, worker.recovery_interval) == (1.5, 2.5)
        assert (worker.poll_interval, worker.claim_retry_seconds) == (0.75, (0.1,))
        assert services.manager.settings.wait_fallback_seconds == 0.5
        webhooks, crons, sweeper = host.background_loops(
            services.manager,
            services.runtime,
            Settings(
                webhook_secret="k",
                webhook_max_attempts=2,
                webhook_retry_base_seconds=0.5,
                webhook_retry_max_seconds=9.0,
                webhook_timeout_seconds=3.0,
                webhook_max_redirects=0,
                webhook_poll_seconds=4.0,
                cron_poll_seconds=6.0,
                sweep_seconds=7.0,
            ),
        )
        assert (webhooks.secret, webhooks.max_attempts, webhooks.max_redirects) == ("k", 2, 0)
        assert (webhooks.base_delay, webhooks.max_delay, webhooks.timeout) == (0.5, 9.0, 3.0)
        assert (webhooks.max_sleep, crons.max_sleep, sweeper.interval_seconds) == (4.0, 6.0, 7.0)


# -- the environment is read in one place ------------------------------------------------------------

SRC = Path(runplane.__file__).parent
#: The only modules that may touch the process environment: the settings; the langgraph.json `env`
#: section, which sets variables for the project's own code; the client commands' RUNPLANE_URL and
#: RUNPLANE_API_KEY (a client's settings, not the server's).
ENV_READERS = {"settings.py", "runtime/project.py", "cli_inspect.py"}


def test_only_the_settings_read_the_environment() -> None:
    readers = {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if re.search(r"os\.environ|getenv\(", path.read_text())
    }
    assert readers <= ENV_READERS, readers - ENV_READERS
