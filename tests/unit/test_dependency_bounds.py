"""The LangGraph packages are bounded on both sides, and the lowest versions CI tests are the bounds.

`scripts/test_bounds.sh` installs `constraints/lowest.txt`; a lower bound raised in pyproject.toml
without that file (or the other way round) would test versions no one can install.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    return {req.name: req for req in map(Requirement, lines)}


def _lowest() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def test_every_langgraph_package_is_bounded_above_and_pinned_at_its_lower_bound() -> None:
    requirements = _requirements()
    lowest = _lowest()
    langgraph = sorted(name for name in requirements if name.startswith("langgraph"))
    assert sorted(lowest) == langgraph
    for name in langgraph:
        specifiers = {spec.operator: spec.version for spec in requirements[name].specifier}
        assert set(specifiers) == {">=", "<"}, name
        assert Version(specifiers[">="]) == Version(lowest[name]), name
        assert Version(specifiers[">="]) < Version(specifiers["<"]), name
