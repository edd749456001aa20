"""Fixtures and hooks: real services for the tests (Redis, SQLite, PostgreSQL, the web and worker processes,
the xAI emulator, the webhook receiver), and the ``processes`` marker. The helpers live in ``support`` (see
its docstring).

Redis: ``REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else an embedded redis-server; tests
use databases 8 to 15 of it, which they flush. PostgreSQL: 127.0.0.1:5432 (trust auth) when it answers,
in a scratch database made for the run; its tests are skipped, with the reason, otherwise.

A test that starts a process (web, worker, emulator, a CLI subprocess, a redis-server) is marked
``processes``: through the fixtures that start them (:data:`PROCESS_FIXTURES`), or by hand. Unmarked tests
run in this process (still on real Redis and real databases), and a process one of them starts is an
error that names the missing marker, so ``-m "not processes"`` (``scripts/test --fast``) is exact.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from support import databases
from support.databases import (
    IN_PROCESS_REDIS_DB,
    POSTGRES_ADMIN,
    copy_postgres,
    empty_postgres,
    postgres_admin,
    redis_url,
)
from support.grok import GrokEmulator
from support.proxy import TcpProxy
from support.receiver import Receiver
from support.stack import StackFactory

PROCESS_FIXTURES = frozenset({"make_stack", "make_module_stack", "grok", "receiver"})
"""Fixtures that start processes: a test that uses one, even through another fixture, is marked."""

PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.spawn"})
"""Audit events (PEP 578) of a process started, refused to tests that are not marked ``processes``."""

_running: list[pytest.Item] = []  # the test running now, when it is not marked ``processes``


def pytest_configure(config: pytest.Config) -> None:
    # The code under test that runs in this process reads REDIS_URL: point it at its database.
    os.environ["REDIS_URL"] = redis_url(IN_PROCESS_REDIS_DB)
    sys.addaudithook(_refuse_processes_in_process)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    in_process = item.get_closest_marker("processes") is None
    if in_process:
        _running.append(item)
    try:
        return (yield)
    finally:
        if in_process:
            _running.remove(item)


def _refuse_processes_in_process(event: str, args: tuple) -> None:
    if _running and event in PROCESS_EVENTS:
        raise RuntimeError(
            f"{_running[0].nodeid} starts a process ({event}): mark it processes "
            "(@pytest.mark.processes), or use a fixture of conftest.PROCESS_FIXTURES"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    databases.stop_embedded()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"redis: {databases.redis_base()}{' (embedded)' if databases.embedded() else ''}"]


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A scratch PostgreSQL database for this run, dropped at the end; skips when none answers."""
    try:
        import psycopg2

        admin = psycopg2.connect(**POSTGRES_ADMIN)
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
    empty_postgres(url)
    return {"DATABASE_URL": url}


@pytest.fixture(scope="session")
def postgres_template(postgres_server_url: str) -> Iterator[str]:
    """A migrated PostgreSQL database, for :func:`db` to copy: quicker than migrating for every test."""
    name = f"{urlsplit(postgres_server_url).path.lstrip('/')}_migrated"
    with postgres_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    database = _migrated_store({"DATABASE_URL": urlsplit(postgres_server_url)._replace(path=f"/{name}").geturl()})
    database.close_all()  # a template takes no connection
    yield name
    with postgres_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(request: pytest.FixtureRequest, database_env: dict[str, str]) -> Iterator:
    """The store in this process, migrated, on each database (``database_env``)."""
    if url := database_env.get("DATABASE_URL"):
        copy_postgres(request.getfixturevalue("postgres_template"), urlsplit(url).path.lstrip("/"))
    database = _migrated_store(database_env)
    yield database
    database.close()


def _migrated_store(env: dict[str, str]):
    """The store in this process, on the database ``env`` selects, migrated."""
    from settings import load_settings
    from store.db import open_database
    from store.migrations import migrate

    database = open_database(load_settings({**env, "REDIS_URL": redis_url(IN_PROCESS_REDIS_DB)}))
    migrate(database)
    return database


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


@pytest.fixture
def grok(tmp_path: Path) -> Iterator[GrokEmulator]:
    """The xAI emulator in a process of its own, with its default settings."""
    emulator = GrokEmulator(tmp_path)
    yield emulator
    emulator.stop()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """The webhook receiver in a process of its own, over HTTPS, its authority's certificate in ``tmp_path``."""
    subscriber = Receiver(tmp_path)
    yield subscriber
    subscriber.stop()


@pytest.fixture
def database_proxy(postgres_server_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """PostgreSQL behind a :class:`TcpProxy`: the proxy, and a ``DATABASE_URL`` through it (an empty database)."""
    empty_postgres(postgres_server_url)
    parts = urlsplit(postgres_server_url)
    proxy = TcpProxy((parts.hostname, parts.port))
    yield proxy, parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()
    proxy.close()
