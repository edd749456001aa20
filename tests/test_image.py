"""The Docker image without Docker: the build context its Dockerfile copies, as ``.dockerignore`` filters it,
holds every module the Procfile's processes and the CLI import, and the configuration they read."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support import ROOT

# What each process type imports first (the Procfile's release, web and worker, and the CLI), and then
# whether the settings find config.toml from where the modules are.
IMPORTS = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]  # the dev install
import ingress, actors, store.migrations, api.serve, actors.launch, cli
from settings import load_settings
load_settings({})
outside = sorted(name for name, module in sys.modules.items()
                 if name.split(".")[0] in {"actors", "api", "cli", "insights", "local", "settings", "store", "telemetry", "testing", "ingress"}
                 and not (getattr(module, "__file__", None) or "").startswith(sys.argv[1]))
print(outside)
"""


def ignored_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, as far as these patterns go: a pattern matches the path or one of its parent folders,
    and ``**/name`` matches ``name`` at any depth."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, pattern) or
               (pattern.startswith("**/") and fnmatch.fnmatchcase(part, pattern[3:]))
               for pattern in patterns for prefix, part in zip(prefixes, parts))


def build_context(target: Path) -> None:
    """Copy what the Dockerfile's ``COPY . .`` takes into ``target``."""
    patterns = ignored_patterns()
    for directory, subdirectories, files in os.walk(ROOT):
        relative_directory = os.path.relpath(directory, ROOT)
        subdirectories[:] = [d for d in subdirectories
                             if not ignored(os.path.normpath(os.path.join(relative_directory, d)), patterns)]
        for name in files:
            relative = os.path.normpath(os.path.join(relative_directory, name))
            if not ignored(relative, patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target / relative)


def test_the_dockerfile_copies_the_whole_filtered_context():
    copies = re.findall(r"^COPY\s+(.+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert copies == [". ."], "one COPY of the filtered context: a list of files forgets the next module"


def test_the_image_holds_every_module_its_processes_import(tmp_path):
    context = tmp_path / "app"
    context.mkdir()
    build_context(context)
    assert not (context / ".venv").exists() and not (context / "tests").exists()
    checked = subprocess.run([sys.executable, "-c", IMPORTS, str(context)], cwd=context, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(context)})
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.strip() == "[]", f"imported from outside the image: {checked.stdout}"
