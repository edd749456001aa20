"""The house style, checked by the suite: ruff's linter and formatter (configured in pyproject.toml) pass on
every file, and no module of the project grows past the size a newcomer reads in one sitting."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

LONGEST_MODULE = 330  # lines: "about 300", with room for a docstring; a module past it wants splitting
ROOMS = ("actors", "api", "benchmarks", "cli", "insights", "local", "settings", "store", "telemetry", "testing")


def ruff() -> str:
    """The ruff the test extras install, beside the interpreter running the tests."""
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert found, "ruff is missing: scripts/bootstrap installs the test extras"
    return found


@pytest.mark.processes
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes_on_every_file(command: list[str]) -> None:
    checked = subprocess.run([ruff(), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-1000:]


def test_no_module_is_longer_than_a_sitting() -> None:
    modules = [ROOT / "ingress.py", *(path for room in ROOMS for path in (ROOT / room).rglob("*.py"))]
    assert len(modules) > 90, "the rooms were found"
    long = {
        str(path.relative_to(ROOT)): n for path in modules if (n := len(path.read_text().splitlines())) > LONGEST_MODULE
    }
    assert not long, long
