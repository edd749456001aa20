"""The house's import rules, in process: importing a module builds nothing, and no module imports itself back.

Entry points build the settings, the broker and the connections (``ingress``, ``actors.worker.setup``,
``api.middleware.Lifespan``, the CLI's commands) or they are made on first use (``actors.broker``); a module
that built them at import would fail the first test, and a package ``__init__`` that imported its own
modules would soon make a circle the second test finds.
"""

from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, free_port

PACKAGES = ("actors", "api", "cli", "insights", "store", "settings", "telemetry", "local", "testing", "webhooks")
MODULES = ("ingress",)  # top-level modules beside the packages

# In a fresh interpreter: every module of the packages, and what ``ingress`` imports (not ingress itself,
# whose one line is the web's entry point building its app). Any attempt to open a socket is recorded.
IMPORT_EVERYTHING = """
import importlib, pkgutil, socket, sys

import pytest

attempts = []
real_connect = socket.socket.connect
def connect(self, address):
    attempts.append(address)
    return real_connect(self, address)
socket.socket.connect = connect

names = []
for package in sys.argv[1:]:
    names.append(importlib.import_module(package).__name__)
    for found in pkgutil.walk_packages(sys.modules[package].__path__, package + "."):
        if not found.name.endswith(".__main__"):
            names.append(importlib.import_module(found.name).__name__)
import api.app

import dramatiq.broker
import actors.broker
import settings
import store.models
assert dramatiq.broker.global_broker is None, "a broker was set up"
assert actors.broker._current is None, "connections were made"
assert settings.get_settings.cache_info().currsize == 0, "the settings were read"
assert store.models.database.obj is None, "a database was opened"
assert not attempts, f"connections attempted: {attempts}"
print(len(names))
"""


@pytest.mark.processes
def test_importing_any_module_builds_nothing_even_with_a_bad_configuration():
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "BATCH_SIZE": "banana",
        "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
    }
    checked = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, *PACKAGES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert int(checked.stdout.strip()) >= 90, "every module was imported"


# The web and the CLI send messages by actor name: neither imports a module that holds actors.
SENDERS_ONLY = """
import importlib, pkgutil, sys
import api, cli.commands, ingress
for found in pkgutil.walk_packages(api.__path__, "api."):
    importlib.import_module(found.name)
import dramatiq.broker
broker = dramatiq.broker.global_broker
declaring = ("actors.analysis", "actors.batching", "actors.bulk", "actors.worker")
print(sorted(name for name in declaring if name in sys.modules))
print(sorted(broker.actors) if broker else [])
"""


@pytest.mark.processes
def test_the_web_and_the_cli_import_no_actor():
    checked = subprocess.run(
        [sys.executable, "-c", SENDERS_ONLY],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.split("\n")[:2] == ["[]", "[]"], checked.stdout


def project_modules() -> dict[str, Path]:
    """Every module of the project by its dotted name; a package's ``__init__`` under the package's name."""
    found = {name: ROOT / f"{name}.py" for name in MODULES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported: not those in functions, nor under
    ``if TYPE_CHECKING``."""
    statements, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            statements.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending.extend(
                child for child in ast.iter_child_nodes(node) if isinstance(child, (ast.stmt, ast.excepthandler))
            )
    return statements


def imported(name: str, statement: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The project modules ``statement`` in module ``name`` depends on: ``import a.b`` on ``a.b`` (not on the
    package ``a``); ``from a import b`` on ``a`` (whose ``__init__`` it reads ``b`` from) and on the module
    ``a.b`` if there is one."""
    if isinstance(statement, ast.Import):
        targets = [alias.name for alias in statement.names]
    else:
        base = statement.module or ""
        if statement.level:
            package = name if modules[name].name == "__init__.py" else name.rpartition(".")[0]
            parent = ".".join(package.split(".")[: len(package.split(".")) - statement.level + 1])
            base = f"{parent}.{base}".strip(".")
        targets = [base, *(f"{base}.{alias.name}" for alias in statement.names)]
    return {target for target in targets if target in modules}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: set().union(
            *(imported(name, statement, modules) for statement in top_level_imports(ast.parse(path.read_text())))
        )
        for name, path in modules.items()
    }


def test_the_graph_sees_the_imports_it_should():
    graph = import_graph()
    assert {"actors.broker", "actors.analysis", "actors.batching"} <= graph["actors.worker"], "from actors import b: b"
    assert "api.app" in graph["ingress"] and "settings" in graph["ingress"]
    assert "store.models" in graph["actors.broker"]
    assert not graph["actors"] and not graph["api"], "the packages' __init__ import nothing of their own"


# What each room may import of the others: web and workers over the domains (insights, webhooks) and the store,
# the store over the domains, and the settings over nothing of the project.
MAY_IMPORT = {
    "settings": set(),
    "ratelimits": set(),
    "insights": {"ratelimits", "settings"},
    "webhooks": {"ratelimits", "settings"},
    "store": {"insights", "settings", "webhooks"},
    "telemetry": {"settings"},
    "actors": {"insights", "settings", "store", "telemetry", "webhooks"},
    "api": {"actors", "insights", "settings", "store", "telemetry", "webhooks"},
    "cli": {"actors", "api", "insights", "settings", "store", "telemetry", "webhooks"},
    "local": {"settings"},
    "testing": {"insights", "settings"},
    "ingress": {"api", "settings"},
}


def test_the_arrows_point_one_way():
    room = lambda name: name.split(".")[0]  # noqa: E731
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if room(target) != room(module) and room(target) not in MAY_IMPORT[room(module)]
    )
    assert not crossing, crossing


def test_no_module_imports_itself_back():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as error:
        raise AssertionError(f"an import circle: {' -> '.join(error.args[1])}") from None
