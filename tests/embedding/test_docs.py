"""docs/embedding.md states facts about the example app that the tests keep true."""

from __future__ import annotations

import ast
import re

from tests.embedding._support import EXAMPLE, ROOT

DOC = ROOT / "docs" / "embedding.md"


def code_lines(source: str) -> list[str]:
    """Lines of code: not blank, not a comment, not part of a docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return [
        line
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    ]


def test_the_stated_line_count_of_the_example_app_is_the_real_one() -> None:
    lines = code_lines((EXAMPLE / "app.py").read_text())
    touching = [line for line in lines if "runplane" in line or re.search(r"\brp\b", line)]
    stated = re.search(r"is (\d+) lines of code .*?; (\d+) of them touch runplane", DOC.read_text(), re.S)
    assert stated is not None
    assert (int(stated.group(1)), int(stated.group(2))) == (len(lines), len(touching))


def test_the_tests_the_doc_cites_exist() -> None:
    cited = set(re.findall(r"`(test_\w+)`", DOC.read_text()))
    sources = "".join(p.read_text() for p in (ROOT / "tests" / "embedding").glob("test_*.py"))
    assert cited and all(f"def {name}(" in sources for name in cited), cited
