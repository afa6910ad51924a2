"""runplane's version, from its one source: `pyproject.toml`, read back from the installed
distribution's metadata. `runplane.__version__`, the API's `/info` and `runplane --version` all
report this value."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    try:
        return version("runplane")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


VERSION = _installed_version()
