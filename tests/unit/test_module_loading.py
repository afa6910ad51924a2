"""One loader for the modules a langgraph.json names (graphs, `store.index.embed`, `auth.path`,
`http.app`): a file relative to the json, or an importable module."""

from __future__ import annotations

from pathlib import Path

import pytest

from runplane.core.errors import InvalidInput
from runplane.runtime.project import import_source


def test_a_file_is_loaded_once_unless_asked_fresh(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text("state = []\n")
    first = import_source("./mod.py", tmp_path, "graph 'g'")
    assert import_source("mod.py", tmp_path, "graph 'g'") is first
    fresh = import_source("./mod.py", tmp_path, "http.app", prefix="runplane_http_app", fresh=True)
    again = import_source("./mod.py", tmp_path, "http.app", prefix="runplane_http_app", fresh=True)
    assert fresh is not first and again is not fresh and again.state is not fresh.state


def test_a_module_name_is_imported(tmp_path: Path) -> None:
    assert import_source("json", tmp_path, "auth.path 'json:x'").__name__ == "json"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("./missing.py", r"^auth.path 'x': file .*missing.py' does not exist$"),
        ("./broken.py", r"^auth.path 'x': importing ./broken.py failed: ZeroDivisionError"),
        ("no_such_module_xyz", r"^auth.path 'x': importing no_such_module_xyz failed: ModuleNotFoundError"),
    ],
)
def test_failures_name_what_was_being_loaded(tmp_path: Path, source: str, message: str) -> None:
    (tmp_path / "broken.py").write_text("1 / 0\n")
    with pytest.raises(InvalidInput, match=message):
        import_source(source, tmp_path, "auth.path 'x'")
