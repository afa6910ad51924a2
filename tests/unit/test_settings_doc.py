"""docs/settings.md is generated from `Settings`: it lists every variable and is never stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from runplane.settings import Settings, variable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "settings_doc.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_doc", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_table_is_up_to_date() -> None:
    doc = generator()
    assert doc.DOC.read_text() == doc.render(), "stale: run `python scripts/settings_doc.py`"


def test_the_table_has_every_variable_with_a_meaning() -> None:
    text = generator().render()
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"| `{variable(name)}` |" in text


def test_the_readme_links_the_table() -> None:
    assert "docs/settings.md" in (SCRIPT.parents[1] / "README.md").read_text()
