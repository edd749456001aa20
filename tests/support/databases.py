"""The test Redis and the PostgreSQL scratch database.

Redis: ``REDIS_URL`` when set, else 127.0.0.1:6379 when it answers, else an embedded redis-server, chosen
on first use (:func:`redis_base`). Tests use databases 8 to 15 of it, which they flush: 8 for the code
that runs in the test process, 9 to 15 round-robin for stacks of processes. Run in parallel
(``pytest -n 2``, as ``scripts/test`` does), the first test process takes that Redis and every other one an
embedded redis-server of its own, so that no two flush each other's databases. PostgreSQL: 127.0.0.1:5432
(trust auth), in a scratch database made for the run.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import redis

from local.embedded_redis import EmbeddedRedis
from support import free_port

IN_PROCESS_REDIS_DB = 8
"""The database of the code under test that runs in the test process (store, batching, the gate)."""

POSTGRES_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres", "connect_timeout": 2}

_embedded: list[EmbeddedRedis] = []
_stack_dbs = itertools.count()


def _local_redis_answers() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@functools.cache
def redis_base() -> str:
    """The test Redis without a database: ``REDIS_URL``'s server, the local one, or an embedded one (always
    an embedded one of its own for a parallel test process other than the first)."""
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":  # over TCP, as the tests reach the first
        _embedded.append(EmbeddedRedis(port=free_port()))
        return _embedded[0].url
    if url := os.environ.get("REDIS_URL"):  # a socket's path is where it is; a TCP URL's path its database
        return url.partition("?")[0] if url.startswith("unix:") else urlsplit(url)._replace(path="", query="").geturl()
    if _local_redis_answers():
        return "redis://127.0.0.1:6379"
    _embedded.append(EmbeddedRedis())
    return _embedded[0].url


def embedded() -> bool:
    return bool(_embedded)


def stop_embedded() -> None:
    for server in _embedded:
        server.stop()


def redis_url(db: int) -> str:
    """The test Redis, database ``db`` (unix sockets take the database as a query parameter)."""
    base = redis_base()
    return f"{base}?db={db}" if base.startswith("unix://") else f"{base}/{db}"


def fresh_redis_url() -> str:
    """A flushed Redis database of its own for one stack (databases 9 to 15, reused round-robin)."""
    url = redis_url(9 + next(_stack_dbs) % 7)
    redis.Redis.from_url(url).flushdb()
    return url


def redis_address() -> tuple[str, int] | str:
    """Where the test Redis listens (host and port, or a unix socket's path), for a proxy in front of it."""
    parts = urlsplit(redis_base())
    return parts.path if parts.scheme == "unix" else (parts.hostname or "127.0.0.1", parts.port or 6379)


def fresh_redis_url_through(port: int) -> str:
    """:func:`fresh_redis_url`, reached through a proxy listening on ``port``."""
    db = parse_qs(urlsplit(url := fresh_redis_url()).query).get("db", [urlsplit(url).path.lstrip("/")])[0]
    return f"redis://127.0.0.1:{port}/{db}"


@contextmanager
def postgres_admin(**options: object) -> Iterator:
    """An autocommitting connection to the PostgreSQL server's ``postgres`` database, closed on exit."""
    import psycopg2

    connection = psycopg2.connect(**{**POSTGRES_ADMIN, **options})
    connection.autocommit = True
    try:
        yield connection
    finally:
        connection.close()


def copy_postgres(template: str, name: str) -> None:
    """Make database ``name`` anew as a copy of ``template`` (whoever is connected to ``name`` is cut off)."""
    with postgres_admin() as admin, admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name} TEMPLATE {template}")


def empty_postgres(url: str) -> None:
    """Drop every table of the database at ``url``, whatever a migration added."""
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        if tables := [f'"{name}"' for (name,) in cursor.fetchall()]:
            cursor.execute(f"DROP TABLE IF EXISTS {', '.join(tables)} CASCADE")
