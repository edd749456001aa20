"""Real services for the tests: Redis, SQLite, PostgreSQL, and the web and worker processes themselves.

Redis: ``REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else an embedded redis-server. Tests
use databases 8 to 15 of it, which they flush. PostgreSQL: 127.0.0.1:5432 (trust auth) when it answers,
in a scratch database made for the run; its tests are skipped, with the reason, otherwise.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from support import ROOT, free_port, wait_until  # noqa: F401 (ROOT and wait_until: for the test modules)

from local.embedded_redis import EmbeddedRedis  # noqa: E402
from local.supervisor import kill_group, stop_all, web_command, worker_command  # noqa: E402
from tcp_proxy import TcpProxy  # noqa: E402


def _local_redis_answers() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


_EMBEDDED: EmbeddedRedis | None = None
if os.environ.get("REDIS_URL"):
    REDIS_BASE = urlsplit(os.environ["REDIS_URL"])._replace(path="", query="").geturl()
elif _local_redis_answers():
    REDIS_BASE = "redis://127.0.0.1:6379"
else:
    _EMBEDDED = EmbeddedRedis()
    REDIS_BASE = _EMBEDDED.url


def redis_url(db: int) -> str:
    """The test Redis, database ``db`` (unix sockets take the database as a query parameter)."""
    return f"{REDIS_BASE}?db={db}" if REDIS_BASE.startswith("unix://") else f"{REDIS_BASE}/{db}"


# In-process tests (store, batching) import the actors, which read settings once: point them at db 8.
IN_PROCESS_REDIS_DB = 8
os.environ["REDIS_URL"] = redis_url(IN_PROCESS_REDIS_DB)
_redis_dbs = itertools.count(9)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _EMBEDDED is not None:
        _EMBEDDED.stop()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"redis: {REDIS_BASE}{' (embedded)' if _EMBEDDED else ''}"]


def fresh_redis_url() -> str:
    """A flushed Redis database of its own for one stack (databases 9 to 15, reused round-robin)."""
    db = 9 + (next(_redis_dbs) - 9) % 7
    url = redis_url(db)
    redis.Redis.from_url(url).flushdb()
    return url


def redis_address() -> tuple[str, int] | str:
    """Where the test Redis listens (host and port, or a unix socket's path), for a proxy in front of it."""
    parts = urlsplit(REDIS_BASE)
    return parts.path if parts.scheme == "unix" else (parts.hostname or "127.0.0.1", parts.port or 6379)


def fresh_redis_url_through(port: int) -> str:
    """:func:`fresh_redis_url`, reached through a proxy listening on ``port``."""
    db = parse_qs(urlsplit(url := fresh_redis_url()).query).get("db", [urlsplit(url).path.lstrip("/")])[0]
    return f"redis://127.0.0.1:{port}/{db}"


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A scratch PostgreSQL database for this run, dropped at the end; skips when none answers."""
    try:
        import psycopg2

        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=2)
    except Exception as error:  # no server, or no trust auth
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 not available: {error}")
    admin.autocommit = True
    name = f"insights_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment selecting a fresh SQLite file, or the PostgreSQL scratch database, emptied."""
    if request.param == "sqlite":
        return {"DB_PATH": str(tmp_path / "insights.db"), "DATABASE_URL": ""}
    url = request.getfixturevalue("postgres_server_url")
    _empty_postgres(url)
    return {"DATABASE_URL": url}


@pytest.fixture
def db(database_env: dict[str, str]) -> Iterator:
    """The store in this process, migrated, on each database (``database_env``)."""
    from settings import load_settings
    from store.db import open_database
    from store.migrations import migrate

    database = open_database(load_settings({**database_env, "REDIS_URL": redis_url(IN_PROCESS_REDIS_DB)}))
    migrate(database)
    yield database
    database.close()


def _empty_postgres(url: str) -> None:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:  # every table, whatever a migration added
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if tables := [f'"{name}"' for (name,) in cursor.fetchall()]:
            cursor.execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")


@dataclass
class Stack:
    """Web and worker processes of the real service, started with ``env``, stopped by :meth:`stop`."""

    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start_web(self) -> httpx.Client:
        port = free_port()
        process = self._spawn(web_command(port), f"web-{port}")
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"web exited with {process.returncode}: {self.log_text()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"web did not become ready: {self.log_text()}")
            time.sleep(0.1)
        self.ports.append(port)
        return httpx.Client(base_url=base_url, timeout=10)

    def start_worker(self, processes: int = 1, threads: int | None = 4) -> subprocess.Popen:
        """The worker launcher (``actors.launch``) with ``processes`` and ``threads`` (``None``: its default,
        derived from the outbound limit); its Prometheus exposition listens on ``self.worker_metrics_port``."""
        self.worker_metrics_port = free_port()
        metrics_dir = self.logs / f"worker-metrics-{self.worker_metrics_port}"
        metrics_dir.mkdir()
        self.env.update(dramatiq_prom_port=str(self.worker_metrics_port), dramatiq_prom_db=str(metrics_dir))
        sizing = {"WORKER_PROCESSES": str(processes), "WORKER_THREADS": str(threads or 0)}
        return self._spawn(worker_command(), f"worker-{len(self.processes)}", sizing)

    def _spawn(self, command: list[str], name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a process and everything it started (a Dramatiq worker's forked processes too)."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def conversations(self, client: httpx.Client, ids: list[str]) -> list[dict]:
        return [client.get(f"/api/v1/conversations/{i}").json() for i in ids]

    def settled(self, client: httpx.Client, ids: list[str], timeout: float = 60) -> list[dict]:
        """Wait until every conversation is ``completed`` or ``failed``; return their documents."""

        def done() -> list[dict] | None:
            documents = self.conversations(client, ids)
            return documents if all(d["status"] in ("completed", "failed") for d in documents) else None

        return wait_until(done, timeout=timeout, message=f"conversations to settle; logs:\n{self.log_text()}")

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Read the stack's database directly (SQLite or PostgreSQL)."""
        from peewee import SqliteDatabase
        from playhouse.db_url import connect

        url = self.env.get("DATABASE_URL")
        db = connect(url) if url else SqliteDatabase(self.env["DB_PATH"])
        with db:
            cursor = db.execute_sql(query.replace("?", db.param), params)
            return list(cursor.fetchall()) if cursor.description else []  # UPDATE and friends return no rows

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        stop_all(self.processes)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])


class StackFactory:
    """``factory(**env)`` makes a :class:`Stack` on a flushed Redis database of its own; ``close`` stops all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stacks: list[Stack] = []

    def __call__(self, **env: object) -> Stack:
        logs = self.directory / f"logs-{len(self.stacks)}"
        logs.mkdir()
        base = {"REDIS_URL": fresh_redis_url(), "DB_PATH": str(self.directory / "insights.db"), "DATABASE_URL": ""}
        stack = Stack({**base, **{k: str(v) for k, v in env.items()}}, logs)
        self.stacks.append(stack)
        return stack

    def close(self) -> None:
        """SIGKILL every process of every stack: a test is over, and nothing it left needs a graceful stop
        (graceful stops cost seconds a stack; ``Stack.stop`` and the supervisor's own test keep them tested)."""
        for stack in self.stacks:
            for process in stack.processes:
                if process.poll() is None:
                    stack.kill(process)
                else:
                    kill_group(process.pid)


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    factory = StackFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def make_module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackFactory]:
    factory = StackFactory(tmp_path_factory.mktemp("stack"))
    yield factory
    factory.close()


def conversation(text: str = "Hello, I need help with my invoice.", **extra) -> dict:
    """A minimal valid request body."""
    return {"messages": [{"role": "customer", "content": text}], **extra}


from emulated_grok import GROK_KEY, GrokEmulator, grok, max_calls_in_any_window  # noqa: E402,F401 (the fixture, and for the test modules)


@pytest.fixture
def database_proxy(postgres_server_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """PostgreSQL behind a :class:`TcpProxy`: the proxy, and a ``DATABASE_URL`` through it (an empty database)."""
    _empty_postgres(postgres_server_url)
    parts = urlsplit(postgres_server_url)
    proxy = TcpProxy((parts.hostname, parts.port))
    yield proxy, parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    proxy.close()
