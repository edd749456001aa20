"""The ``insights`` console script as the tests run it: a subprocess of the environment running pytest,
on a stack's settings."""

from __future__ import annotations

import json
import os
import subprocess

from support import BIN, ROOT

INSIGHTS = BIN / "insights"


def insights(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(INSIGHTS), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def run(stack, *args: str, cwd=ROOT, stdin: str | None = None, script: bool = False) -> subprocess.CompletedProcess:
    """``insights`` (the console script, or ``scripts/insights``) in ``cwd``, without a terminal."""
    command = [str(ROOT / "scripts" / "insights")] if script else [str(INSIGHTS)]
    env = {**os.environ, **stack.env}
    env.pop("PYTHONPATH", None)  # as an operator runs it
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, input=stdin or "", capture_output=True, text=True, timeout=120
    )


def migrated(stack):
    """The stack's database, created as the Procfile's release step creates it (reading commands won't),
    by the same function in this process: the release itself runs as a process in test_operations.py,
    test_reconciler.py and test_image.py, and a process more here costs a second and a half a test."""
    from settings import load_settings
    from store.db import open_database
    from store.migrations import migrate

    database = open_database(load_settings({**os.environ, **stack.env}))
    migrate(database)
    database.close_all()
    return stack


def announced(stderr: str) -> list[str]:
    """The lines of ``stderr`` after the one saying which database and Redis the command uses."""
    first, *rest = stderr.splitlines()
    assert first.startswith("insights: database "), stderr
    return rest


def line(text: str, **extra) -> dict:
    """One line of an import file."""
    return {"messages": [{"role": "customer", "content": text}], **extra}


def write_lines(path, lines: list) -> None:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
