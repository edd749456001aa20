"""The database from configuration: PostgreSQL when ``DATABASE_URL`` is set, else SQLite at ``DB_PATH``."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from peewee import Database, Field, Node, PostgresqlDatabase, fn
from playhouse.db_url import parse
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from settings import Settings
from store.models import database

T = TypeVar("T")

SQLITE_PRAGMAS = {  # journal_mode=wal is set once per file, by store.migrations
    "synchronous": "full",  # a 202 promises the conversation survives a power cut, not only a crash
    "busy_timeout": 10_000,  # several web and worker processes take turns writing
    "foreign_keys": 1,
}


def open_database(settings: Settings) -> Database:
    """Bind the models to the configured database and return it.

    Connections come from a pool of at most ``DB_POOL_SIZE`` per process (a thread waits up to
    ``DB_POOL_TIMEOUT_SECONDS`` for one), on SQLite as on PostgreSQL: a worker runs hundreds of threads
    that mostly wait on Grok, and each hands its connection back (``release``) before it waits, so the
    pool, not the thread count, bounds the connections a process holds (and on SQLite the memory: every
    connection has its own page and statement caches).
    """
    pool = {"max_connections": settings.db_pool_size, "timeout": settings.db_pool_timeout_seconds, "stale_timeout": 300}
    if settings.database_url:
        url = make_url(settings.database_url)
        db = PooledPostgresqlDatabase(url.pop("database"), **pool, **url)
    else:
        Path(settings.db_path).parent.mkdir(parents=True, exist_ok=True)
        # One thread at a time per connection (the pool sees to it), though not always the same thread.
        db = PooledSqliteDatabase(settings.db_path, pragmas=SQLITE_PRAGMAS, check_same_thread=False, **pool)
        db.register_function(_lower, "unicode_lower", 1, deterministic=True)
    database.initialize(db)
    return db


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def contains_any_case(field: Field, text: str) -> Node:
    """``field`` contains ``text`` in any case, every letter folded alike on both databases: PostgreSQL's
    ``ILIKE`` folds every letter, SQLite's ``LIKE`` only ASCII ones, so there both sides are lowered by
    Python first (``%`` and ``_`` are plain characters either way)."""
    if isinstance(database.obj, PostgresqlDatabase):
        return field.contains(text)
    return fn.unicode_lower(field).contains(text.lower())


def make_url(database_url: str) -> dict:
    """``DATABASE_URL`` as connection parameters (``postgres://``, ``postgresql://`` and ``+pool`` alike)."""
    return parse("postgresql://" + database_url.split("://", 1)[1])


def release() -> None:
    """Hand this thread's connection back (to the pool, on PostgreSQL) if it holds one: a thread about to
    wait (on Grok, for its next message) must not sit on a connection others need."""
    if database.obj is not None and not database.is_closed():
        database.close()


def call_and_release(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, then :func:`release` (for calls made from a pool of threads)."""
    try:
        return function(*args)
    finally:
        release()


def describe(settings: Settings) -> str:
    """Where the data lives, for start-up logs (without the password)."""
    if settings.database_url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.database_url)
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432}{parts.path}"
    return f"SQLite at {Path(settings.db_path).resolve()}"


# SQLite has one writer at a time, and a writer that finds the file locked sleeps in SQLite's busy handler
# (1, 2, 5 ... 100 ms steps) however soon the lock is free: a process's threads queue here instead.
_SQLITE_WRITERS = threading.RLock()


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[None]:
    """A transaction that takes the write lock at once, so a read-then-write cannot interleave. On SQLite
    this process's writers take turns on a lock first (measured in BENCHMARKS.md, worker side: under a
    few dozen writing threads, SQLite's own waits left the calls at a tenth of the limit)."""
    if isinstance(db, PostgresqlDatabase):
        with db.atomic():
            yield
        return
    with _SQLITE_WRITERS, db.atomic("IMMEDIATE"):
        yield


def unindexed(field: Field) -> Node:
    """``field`` as an expression no index serves, for a condition beside a lookup by key (``id IN
    (...)``): SQLite's planner, without statistics, may otherwise scan the ``(lane, status, ...)`` index,
    every waiting conversation of a backlog, instead of looking up the batch's few ids (measured: most of a
    worker's CPU at 150 calls/s). ``lane || ''`` is the same text on SQLite and PostgreSQL."""
    return field.concat("")


def locked(query):
    """``SELECT ... FOR UPDATE`` where the database has it (SQLite locks the whole file on write)."""
    return query.for_update() if isinstance(database.obj, PostgresqlDatabase) else query
