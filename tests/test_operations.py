"""Operators' view: Prometheus metrics of web and workers, and the Procfile run by honcho."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from types import SimpleNamespace

import httpx
import psutil
import pytest
import yaml
from support import BIN, ROOT, free_port, wait_until
from support.cli import line, migrated, run, write_lines
from support.databases import fresh_redis_url
from support.metrics import samples, value
from support.traffic import conversation


def test_web_and_worker_metrics(make_stack):
    stack = make_stack(BATCH_FLUSH_SECONDS=0.3)
    client = stack.start_web()
    stack.start_worker()
    ids = [
        client.post("/api/v1/conversations", json=conversation(f"Thanks {n}!")).json()["conversation_id"]
        for n in range(3)
    ]
    assert client.post("/api/v1/conversations", json={"messages": []}).status_code == 422
    stack.settled(client, ids)

    web = samples(client.get("/metrics").text)
    assert value(web, "insights_http_requests_total", route="/api/v1/conversations", method="POST", status="202") == 3
    assert value(web, "insights_http_requests_total", route="/api/v1/conversations", method="POST", status="422") == 1
    assert value(web, "insights_conversations_accepted_total") == 3
    assert value(web, "insights_conversations", status="completed") == 3
    assert value(web, "insights_queue_messages", queue="analyze", state="dead") == 0
    assert ("insights_stream_entries", frozenset()) in web

    worker = samples(httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/", timeout=10).text)
    assert value(worker, "insights_conversations_settled_total", outcome="completed") == 3
    assert value(worker, "insights_grok_calls_total", outcome="ok") >= 1
    assert value(worker, "insights_batch_conversations_sum") == 3
    assert value(worker, "dramatiq_messages_total", queue_name="collect", actor_name="collect_many") == 3


def test_a_worker_counts_and_says_the_ids_its_database_does_not_hold(make_stack, tmp_path):
    """``insights import --create-database`` at a mistyped ``DB_PATH`` sends ids the worker, on the real
    database, cannot find: each is counted, and said in a line naming the worker's database, at most once
    a minute however many arrive."""
    stack = migrated(make_stack())
    stack.start_worker()
    stray = SimpleNamespace(env={**stack.env, "DB_PATH": str(tmp_path / "stray.db")})

    def unknown_ids() -> float:
        try:
            return value(
                samples(httpx.get(f"http://127.0.0.1:{stack.worker_metrics_port}/", timeout=10).text),
                "insights_conversations_unknown_total",
            )
        except httpx.TransportError:  # the worker is not serving metrics yet
            return 0.0

    for name, lines, counted in (("first", 2, 2), ("second", 1, 3)):
        write_lines(tmp_path / f"{name}.jsonl", [line(f"{name} file, line {n}") for n in range(lines)])
        imported = run(
            stray, "import", "--lane", "realtime", "--create-database", "--no-progress", str(tmp_path / f"{name}.jsonl")
        )
        assert imported.returncode == 0, imported.stderr
        wait_until(lambda counted=counted: unknown_ids() == counted, message=f"{counted} unknown ids counted")
    said = [
        text
        for text in (stack.logs / "worker-0.log").read_text().splitlines()
        if "not in this worker's database" in text
    ]
    assert len(said) == 1, said
    assert f"2 conversation id(s) not in this worker's database (SQLite at {stack.env['DB_PATH']}), dropped" in said[0]


RACE_FOR_THE_METRICS = """
import threading
from telemetry import metrics

start, failures = threading.Barrier(16), []

def first_call(build):
    start.wait()
    try:
        build()
    except Exception as error:
        failures.append(repr(error))

for build in (metrics.worker, metrics.web):
    threads = [threading.Thread(target=first_call, args=(build,)) for _ in range(16)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
print(failures)
"""


@pytest.mark.processes
def test_threads_first_asking_for_the_metrics_at_once_all_get_them():
    """A worker's threads finishing their first batches together each ask for the metrics first: they are
    registered once (registered twice, prometheus_client raised in every thread but one and their batches
    stayed claimed until their lease ran out)."""
    race = subprocess.run(
        [str(BIN / "python"), "-c", RACE_FOR_THE_METRICS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert race.returncode == 0, race.stderr
    assert race.stdout.strip() == "[]"


@pytest.mark.processes
def test_the_procfile_runs_under_honcho_with_several_web_workers(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "REDIS_URL": fresh_redis_url(),
        "DB_PATH": str(tmp_path / "procfile.db"),
        "BATCH_FLUSH_SECONDS": "0.3",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "web-metrics"),
        "dramatiq_prom_port": str(free_port()),
        "dramatiq_prom_db": str(tmp_path / "worker-metrics"),
    }
    (tmp_path / "worker-metrics").mkdir()
    release = subprocess.run(
        ["honcho", "start", "release"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert release.returncode == 0 and "applied 0001_initial" in release.stdout

    honcho = subprocess.Popen(
        ["honcho", "start", "web", "worker"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=open(tmp_path / "honcho.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def ready() -> bool:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=60, message=f"honcho's web; log: {(tmp_path / 'honcho.log').read_text()}")
        ids = [
            client.post("/api/v1/conversations", json=conversation(f"Order {n} is fine")).json()["conversation_id"]
            for n in range(6)
        ]
        wait_until(
            lambda: all(client.get(f"/api/v1/conversations/{i}").json()["status"] == "completed" for i in ids),
            timeout=60,
            message="the Procfile's worker to complete them",
        )
        # Two uvicorn workers answer scrapes in turn; multiprocess mode makes each answer whole.
        for _ in range(4):
            assert value(samples(client.get("/metrics").text), "insights_conversations_accepted_total") == 6
        family = psutil.Process(honcho.pid).children(recursive=True)
        [uvicorn] = [p for p in family if "api.serve" in " ".join(p.cmdline())]
        workers = [p for p in uvicorn.children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, "WEB_CONCURRENCY uvicorn workers"
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(timeout=30)
    gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


def test_compose_runs_the_procfile_processes_on_postgres():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line)
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "release", "web", "worker"}
    assert services["release"]["command"] == procfile["release"]
    assert services["web"]["command"] == procfile["web"]
    assert services["worker"]["command"] == procfile["worker"]
    assert all(
        services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
        for name in ("release", "web", "worker")
    )
    assert services["web"]["depends_on"] == {"release": {"condition": "service_completed_successfully"}}


@pytest.mark.processes
def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed here")
    checked = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
