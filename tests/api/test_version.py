"""The version has one source, pyproject.toml: the package, `/info` and `runplane --version` agree."""

from __future__ import annotations

import tomllib
from pathlib import Path

import httpx
from click.testing import CliRunner

import runplane
from runplane.cli import main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def declared_version() -> str:
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def test_the_package_reports_the_declared_version() -> None:
    assert runplane.__version__ == declared_version()


async def test_info_reports_the_declared_version(client: httpx.AsyncClient) -> None:
    assert (await client.get("/info")).json()["version"] == declared_version()


def test_the_cli_reports_the_declared_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert declared_version() in result.output
