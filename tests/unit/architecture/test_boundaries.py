"""The architecture's rules that import-linter cannot see: SQL lives in the index package (and
the web read model, declared as such), and case-state values are spelled only where the states
are defined. Read from the source with ``ast``, so a new module is checked too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from daemon.cases import CaseState

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("daemon", "workers", "pipeline", "dicom_io")
SQL_HOMES = ("daemon/index/", "daemon/web/queries.py", "daemon/web/monitor.py")
STATE_HOMES = ("daemon/cases.py",)
SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP)\s", re.IGNORECASE)


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(ROOT)), ast.parse(path.read_text(), str(path)))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    ]


def _strings(tree: ast.Module) -> list[ast.Constant]:
    """String constants that are not docstrings, dict keys read with .get() or [...], or the
    members of an enum class."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skip.add(id(body[0].value))  # docstring
        if isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and node.args:
            skip.add(id(node.args[0]))
        if isinstance(node, ast.ClassDef) and any(
            getattr(b, "id", "") == "StrEnum" for b in node.bases
        ):
            skip.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Constant))
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip
    ]


def test_sql_is_written_only_in_the_index_package_and_the_web_read_model() -> None:
    found = [
        f"{name}:{node.lineno}: {node.value[:60]!r}"
        for name, tree in _modules()
        if not name.startswith(SQL_HOMES)
        for node in _strings(tree)
        if SQL.match(node.value)
    ]
    assert found == [], "SQL outside daemon/index and the web read model:\n" + "\n".join(found)


def test_case_states_are_spelled_only_where_they_are_defined() -> None:
    values = {str(s) for s in CaseState}
    quoted = re.compile(r"'(" + "|".join(map(re.escape, values)) + r")'")
    found = [
        f"{name}:{node.lineno}: {node.value[:60]!r}"
        for name, tree in _modules()
        if name.startswith("daemon/") and not name.startswith(STATE_HOMES)
        for node in _strings(tree)
        if node.value in values or quoted.search(node.value)
    ]
    assert found == [], "case-state literals outside daemon/cases.py:\n" + "\n".join(found)


def test_the_rules_see_a_violation() -> None:
    """The checks above can fail: a module with SQL and a state literal is caught."""
    tree = ast.parse('x = "SELECT * FROM cases WHERE state = \'ready\'"\ny = "exported"\n')
    strings = [n.value for n in _strings(tree)]
    assert any(SQL.match(s) for s in strings)
    assert "exported" in strings
