"""The test house itself, in process: helpers come from ``support``, never from another test module or from
conftest, and a test not marked ``processes`` cannot start one."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_no_test_module_imports_another_or_conftest():
    modules = sorted([*TESTS.glob("*.py"), *(TESTS / "support").glob("*.py")])
    assert TESTS / "conftest.py" in modules and TESTS / "support" / "__init__.py" in modules
    offenders = {
        path.relative_to(TESTS).as_posix(): sorted(
            name
            for name in imported_modules(path)
            if name.split(".")[0].startswith("test_") or name.split(".")[0] == "conftest"
        )
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}, "helpers belong in tests/support"


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "test_sample.py"
    module.write_text("import os\n\ndef test_x():\n    from test_other import helper\n    from conftest import thing\n")
    assert imported_modules(module) == {"os", "test_other", "conftest"}


def test_an_unmarked_test_cannot_start_a_process():
    with pytest.raises(RuntimeError, match="mark it processes"):
        subprocess.run(["true"], check=True)
