"""The CLI's flags: each is a setting's, wins over its variable, and `--help` names the variable."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from runplane.cli import load_settings, main, serve, worker
from runplane.settings import Settings, variable

ENVIRON = {
    "RUNPLANE_PORT": "9000",
    "RUNPLANE_WORKERS": "3",
    "RUNPLANE_UI": "1",
    "RUNPLANE_LEASE_SECONDS": "20",
}


def flags_of(command: click.Command, argv: list[str]) -> dict[str, object]:
    """The options `argv` gives `command`, parsed by click as the command line would be."""
    return dict(command.make_context(command.name or "", argv).params)


def test_a_flag_wins_over_its_variable_and_the_others_stay() -> None:
    options = flags_of(serve, ["--port", "9001", "--no-ui", "--default-on-disconnect", "cancel"])
    settings = load_settings(ENVIRON, **options)
    assert (settings.port, settings.ui, settings.default_on_disconnect) == (9001, False, "cancel")
    assert (settings.workers, settings.lease_seconds) == (3, 20.0)  # from the variables


def test_the_worker_takes_concurrency_as_workers() -> None:
    settings = load_settings(ENVIRON, **flags_of(worker, ["--concurrency", "5", "--shutdown-grace", "1"]))
    assert (settings.workers, settings.shutdown_grace) == (5, 1.0)


def test_a_bad_flag_value_is_a_usage_error_naming_the_setting() -> None:
    with pytest.raises(click.UsageError, match="RUNPLANE_LEASE_SECONDS"):
        load_settings({}, **flags_of(serve, ["--lease-seconds", "0"]))


@pytest.mark.parametrize("command", ["dev", "serve", "worker", "migrate"])
def test_every_flag_is_a_setting_and_help_names_its_variable(command: str) -> None:
    options = [p for p in main.commands[command].params if isinstance(p, click.Option) and p.name != "help"]
    assert options
    help_text = " ".join(CliRunner().invoke(main, [command, "--help"], terminal_width=400).output.split())
    for option in options:
        assert option.name in Settings.model_fields, option.name
        assert option.opts[0] in help_text
        assert f"[{variable(option.name)};" in help_text


def test_serve_offers_the_often_set_knobs() -> None:
    flags = {p.name for p in serve.params}
    wanted = {
        "port",
        "database_url",
        "workers",
        "lease_seconds",
        "default_timeout",
        "max_wait_seconds",
        "docs",
    }
    assert wanted <= flags
