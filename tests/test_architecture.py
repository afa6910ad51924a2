"""The `RunManager` is the one door to the store and the bus (STYLE "Shape"; issue 16).

import-linter keeps the API and the worker from importing a store or a bus; this keeps them from
reaching one through the manager they were given (`call.manager.bus`, `self.manager.store`) or
through its private parts, which no import contract can see. A use-case they need goes on the
manager instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "runplane"

#: Everything that is handed a manager and must use it as a door (the composition roots, `cli.py`
#: and `host.py`, build the manager from a store and a bus, so they are not listed).
DOOR_USERS = sorted(
    [
        *(SRC / "api").rglob("*.py"),
        *(SRC / "worker").rglob("*.py"),
        SRC / "facade.py",
        SRC / "embedded.py",
        SRC / "streaming.py",
        SRC / "sync.py",
    ]
)

#: The manager's parts behind the door.
BEHIND_THE_DOOR = frozenset({"store", "bus"})


def _names_a_manager(node: ast.expr) -> bool:
    """`manager`, `self.manager`, `call.manager`, `self._manager`, `services.manager`..."""
    if isinstance(node, ast.Name):
        return node.id.lstrip("_").endswith("manager")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_").endswith("manager")
    return False


def reaches_through(source: str) -> list[tuple[int, str]]:
    """`(line, expression)` of every use of a manager's store, bus or private attribute."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not _names_a_manager(node.value):
            continue
        if node.attr in BEHIND_THE_DOOR or (node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_check_sees_every_way_through() -> None:
    source = (
        "call.manager.bus.subscribe(r)\n"
        "self.manager.store.get_run(r)\n"
        "self._manager.bus\n"
        "manager._end(r)\n"
        "call.manager.follow_new_run(r)\n"  # a use-case: fine
        "self.store.get(r)\n"  # not a manager's
    )
    assert sorted(line for line, _ in reaches_through(source)) == [1, 2, 3, 4]


@pytest.mark.parametrize("path", DOOR_USERS, ids=lambda p: str(p.relative_to(SRC)))
def test_no_reach_through_the_manager(path: Path) -> None:
    found = reaches_through(path.read_text())
    assert not found, f"{path.relative_to(SRC)} reaches behind the RunManager (add a use-case): {found}"
