"""The benchmarks still import and still take their options, so a benchmark that a move broke fails the
suite rather than the day someone next measures; and the harness they share undoes what it starts.

``benchmarks/`` is not installed: it is found from the repository root, as ``scripts/python -m
benchmarks.NAME`` finds it.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import os
import pkgutil

import httpx
import psutil
import psycopg2
import pytest
import redis
from support import ROOT, free_port

import benchmarks
from benchmarks.harness import HOST, Run

HARNESS = {
    "harness",
    "emulator_log",
    "loadgen",
    "bare_app",
    "webhook_load",
}  # what the benchmarks share; every other module is an entry point
ENTRY_POINTS = sorted(
    name for _finder, name, _package in pkgutil.iter_modules(benchmarks.__path__) if name not in HARNESS
)


def test_the_benchmarks_are_found() -> None:
    assert {"bench_ingress", "bench_outbound", "bench_cost", "soak", "eval_sentiment"} <= set(ENTRY_POINTS)


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_each_benchmark_gives_its_help_and_starts_nothing(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"benchmarks.{name}")
    children = {child.pid for child in psutil.Process().children(recursive=True)}
    with pytest.raises(SystemExit) as exited:
        module.main(["--help"])
    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert help_text.startswith("usage:")
    assert " ".join(module.__doc__.splitlines()[0].split()) in help_text
    assert {child.pid for child in psutil.Process().children(recursive=True)} <= children


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_no_benchmark_imports_another(name: str) -> None:
    tree = ast.parse(importlib.util.find_spec(f"benchmarks.{name}").loader.get_source(f"benchmarks.{name}"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    from_benchmarks = {module for module in imported if module.split(".")[0] == "benchmarks"}
    assert from_benchmarks <= {f"benchmarks.{shared}" for shared in HARNESS}


def test_the_benchmarks_stay_out_of_the_package_and_the_image() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    packages = setup["options.packages.find"]["include"].split()
    assert packages and not any(package.startswith("benchmarks") for package in packages)
    assert "benchmarks" in (ROOT / ".dockerignore").read_text().splitlines()


@pytest.mark.processes
def test_a_run_undoes_what_it_started(postgres_server_url: str) -> None:
    port = free_port()
    with Run("bench-test-", postgres=postgres_server_url) as run:
        emulator = run.start_emulator(port)
        assert httpx.get(f"http://{HOST}:{port}/_emulator/log").status_code == 200
        assert run.env()["REDIS_URL"] == os.environ["REDIS_URL"]  # the Redis it was given: none embedded
        database = run.database_url.rsplit("/", 1)[1]
        assert database in postgres_databases(postgres_server_url)
        run.db_path.write_text("scratch")
    assert emulator.poll() is not None
    assert not run.directory.exists()
    assert database not in postgres_databases(postgres_server_url)


@pytest.mark.processes
def test_a_run_without_a_redis_url_embeds_one_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL")
    with Run("bench-test-") as run:
        assert redis.Redis.from_url(run.redis_url).ping()
        assert run.env()["REDIS_URL"] == run.redis_url
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(run.redis_url).ping()


def postgres_databases(server_url: str) -> set[str]:
    connection = psycopg2.connect(server_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
