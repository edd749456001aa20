"""The Docker image, built the Dockerfile's way: its build context (``COPY . .`` as ``.dockerignore`` filters
it), installed non-editable into a fresh virtual environment, works from a folder outside that context:
every installed module imports from the install, the settings find the installed ``config.toml``, and the
Procfile's processes (release, web, worker) start from it. Where a Docker engine answers, ``docker build``
too.

The fresh environment reuses the test environment's dependencies (a ``.pth`` naming its site-packages:
``venv --system-site-packages`` would name the base interpreter's, not the test venv's), so the install
needs no network: ``pip install --no-deps --no-build-isolation --no-index``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ROOT, free_port, wait_until
from support.databases import fresh_redis_url

from local.supervisor import stop_all

# Run by the installed interpreter from outside the build context: import every module the distribution
# installed; say which came from elsewhere, where config.toml was found, and whether settings load.
IMPORT_ALL = """
import importlib, json, sys
from importlib.metadata import distribution
files = distribution("conversation-insights").files
modules = sorted(".".join(f.with_suffix("").parts).removesuffix(".__init__") for f in files
                 if f.suffix == ".py" and f.parts[0] != ".." and f.stem != "__main__")
outside = [name for name in modules if not importlib.import_module(name).__file__.startswith(sys.prefix)]
import settings
settings.load_settings({})
print(json.dumps({"modules": modules, "outside": outside, "config": str(settings.config_path())}))
"""


def ignored_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule, as far as these patterns go: a pattern matches the path or one of its parent folders,
    and ``**/name`` matches ``name`` at any depth."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(
        fnmatch.fnmatchcase(prefix, pattern) or (pattern.startswith("**/") and fnmatch.fnmatchcase(part, pattern[3:]))
        for pattern in patterns
        for prefix, part in zip(prefixes, parts)
    )


def build_context(target: Path) -> None:
    """Copy what the Dockerfile's ``COPY . .`` takes into ``target``."""
    patterns = ignored_patterns()
    for directory, subdirectories, files in os.walk(ROOT):
        relative_directory = os.path.relpath(directory, ROOT)
        subdirectories[:] = [
            d for d in subdirectories if not ignored(os.path.normpath(os.path.join(relative_directory, d)), patterns)
        ]
        for name in files:
            relative = os.path.normpath(os.path.join(relative_directory, name))
            if not ignored(relative, patterns):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target / relative)


def install(context: Path, venv: Path) -> Path:
    """``context`` installed non-editable into a fresh ``venv`` over this environment's dependencies;
    the new environment's interpreter."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return python


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of the image's install (the build context, installed non-editable)."""
    root = tmp_path_factory.mktemp("image")
    context = root / "app"
    context.mkdir()
    build_context(context)
    assert not (context / ".venv").exists() and not (context / "tests").exists()
    return install(context, root / "venv")


@pytest.fixture
def outside(image: Path, tmp_path: Path) -> dict[str, str]:
    """An environment for the image's processes run from ``tmp_path``: nothing of the checkout on the path,
    a Redis database and a SQLite file of their own, the configuration found as installed."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "CONFIG_FILE")}
    return {
        **env,
        "PATH": f"{image.parent}:{env['PATH']}",
        "REDIS_URL": fresh_redis_url(),
        "DB_PATH": str(tmp_path / "insights.db"),
        "DATABASE_URL": "",
    }


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts (each in a session of its own), stopped at its end."""
    processes: list[subprocess.Popen] = []
    yield processes
    stop_all(processes)


def test_the_dockerfile_copies_the_whole_filtered_context():
    copies = re.findall(r"^COPY\s+(.+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert copies == [". ."], "one COPY of the filtered context: a list of files forgets the next module"


@pytest.mark.processes
def test_every_installed_module_imports_from_the_install_and_finds_its_configuration(image, outside, tmp_path):
    checked = subprocess.run(
        [str(image), "-c", IMPORT_ALL], cwd=tmp_path, env=outside, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    found = json.loads(checked.stdout)
    assert {"ingress", "api.serve", "actors.launch", "store.migrations", "cli", "testing.emulator"} <= set(
        found["modules"]
    )
    assert found["outside"] == [], "imported from outside the install"
    assert found["config"] == str(image.parent.parent / "share" / "conversation-insights" / "config.toml")


@pytest.mark.processes
def test_the_procfile_processes_start_from_the_install(image, outside, started, tmp_path):
    release = subprocess.run(
        [str(image), "-m", "store.migrations"], cwd=tmp_path, env=outside, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stderr[-2000:]

    port = free_port()
    web_log = tmp_path / "web.log"
    started.append(
        subprocess.Popen(
            [str(image), "-m", "api.serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=outside,
            stdout=web_log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    wait_until(
        lambda: answers(f"http://127.0.0.1:{port}/healthz"),
        timeout=60,
        message=lambda: f"the web process; {web_log.read_text()}",
    )

    metrics = tmp_path / "worker-metrics"
    metrics.mkdir()
    worker_env = {
        **outside,
        "WORKER_PROCESSES": "1",
        "dramatiq_prom_port": str(free_port()),
        "dramatiq_prom_db": str(metrics),
    }
    log = tmp_path / "worker.log"
    started.append(
        subprocess.Popen(
            [str(image), "-m", "actors.launch"],
            cwd=tmp_path,
            env=worker_env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    wait_until(
        lambda: "Worker process is ready for action" in log.read_text(),
        timeout=60,
        message=lambda: f"the worker; {log.read_text()}",
    )
    assert "Traceback" not in log.read_text()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def docker_engine() -> str | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode == 0:
        return docker
    return None


@pytest.mark.processes
@pytest.mark.timeout(1800)  # the first build downloads the base image and the dependencies
def test_docker_builds_the_image():
    docker = docker_engine()
    if docker is None:
        pytest.skip("no Docker engine answers here (docker info fails or docker is not installed)")
    built = subprocess.run(
        [docker, "build", "--quiet", "--tag", "conversation-insights:test", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert built.returncode == 0, built.stderr[-3000:]
