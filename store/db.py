"""The database from configuration: PostgreSQL when ``DATABASE_URL`` is set, else SQLite at ``DB_PATH``."""

from __future__ import annotations

from pathlib import Path

from peewee import Database, PostgresqlDatabase, SqliteDatabase
from playhouse.db_url import connect

from settings import Settings
from store.models import database

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer; several processes share the file
    "synchronous": "full",  # a 202 promises the conversation survives a power cut, not only a crash
    "busy_timeout": 10_000,  # several web and worker processes take turns writing
    "foreign_keys": 1,
}


def open_database(settings: Settings) -> Database:
    """Bind the models to the configured database and return it (connections open lazily per thread)."""
    if settings.database_url:
        url = settings.database_url.replace("postgres://", "postgresql://", 1)
        db = connect(url)
    else:
        Path(settings.db_path).parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDatabase(settings.db_path, pragmas=SQLITE_PRAGMAS, timeout=10)
    database.initialize(db)
    return db


def describe(settings: Settings) -> str:
    """Where the data lives, for start-up logs (without the password)."""
    if settings.database_url:
        from urllib.parse import urlsplit

        parts = urlsplit(settings.database_url)
        return f"PostgreSQL at {parts.hostname}:{parts.port or 5432}{parts.path}"
    return f"SQLite at {Path(settings.db_path).resolve()}"


def write_transaction(db: Database):
    """A transaction that takes the write lock at once, so a read-then-write cannot interleave."""
    return db.atomic() if isinstance(db, PostgresqlDatabase) else db.atomic("IMMEDIATE")


def locked(query):
    """``SELECT ... FOR UPDATE`` where the database has it (SQLite locks the whole file on write)."""
    return query.for_update() if isinstance(database.obj, PostgresqlDatabase) else query
