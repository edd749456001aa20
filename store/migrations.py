"""Schema creation and migration at start-up, without losing data.

Each migration runs once, in order, recorded in ``schema_migrations``; every process may call
:func:`migrate` at start-up, and concurrent callers are serialised by a lock (an advisory lock on
PostgreSQL, the write lock on SQLite).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator

from peewee import Database, OperationalError, PostgresqlDatabase

from insights.incoming import occurred_at_in_payload
from store import rollup_check, usage
from store.models import (
    Conversation,
    IdempotencyKey,
    Insight,
    InsightCount,
    InsightHistory,
    InsightUsage,
    ProviderBatch,
    ProviderBatchRequest,
    WorkerLease,
)
from store.webhook_models import WebhookDelivery, WebhookSubscription

MIGRATION_LOCK_ID = 0x1D5_1A7  # arbitrary constant naming this application's advisory lock


def _initial_schema(db: Database) -> None:
    db.create_tables([Conversation, Insight], safe=True)


def _insight_history(db: Database) -> None:
    db.create_tables([InsightHistory], safe=True)


def _insight_filter_index(db: Database) -> None:
    Insight._schema.create_indexes(safe=True)


def _insight_counts(db: Database) -> None:
    """The daily rollups behind fast counts and summaries (``store.counts``), filled from the insights
    already stored.

    First, scores and confidences become double precision on PostgreSQL (they were 4-byte reals, so a
    stored 0.7 no longer compared equal to the 0.7 of a query) to match the 8-byte REAL of SQLite.
    """
    if isinstance(db, PostgresqlDatabase):
        for table in ("insights", "insight_history"):
            db.execute_sql(  # through text: a stored 0.7 comes back as 0.7, not 0.699999988079071
                f"ALTER TABLE {table} "
                "ALTER COLUMN sentiment_score TYPE double precision USING sentiment_score::text::double precision, "
                "ALTER COLUMN confidence TYPE double precision USING confidence::text::double precision"
            )
    db.create_tables(rollup_check.ROLLUPS, safe=True)  # every table rebuild() fills
    Insight._schema.create_indexes(safe=True)  # the index leading with confidence
    rollup_check.rebuild()


def _claim_token(db: Database) -> None:
    """Each claim's token on ``conversations``, so that a result is stored only for the claim that produced
    it. Conversations claimed before it have none, and a result without one (from a worker of an older
    release) settles exactly those. On a new database 0001 has made the column already."""
    _add_columns(db, "conversations", {"claim_token": "VARCHAR(32)"})


def _add_columns(db: Database, table: str, columns: dict[str, str]) -> None:
    """Add each of ``columns`` (name: SQL type) that ``table`` lacks (a new database has them from 0001)."""
    present = {column.name for column in db.get_columns(table)}
    for name, sql_type in columns.items():
        if name not in present:
            db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")


def _occurred_at(db: Database) -> None:
    """The conversation's own time (``occurred_at``) and when its current wait began (``enqueued_at``).

    Existing conversations get ``occurred_at`` from their stored payloads by the rule new ones follow
    (:func:`insights.incoming.occurred_at_in_payload`), and their insights a copy of it; ``enqueued_at``
    is the last change of an open conversation, the arrival of a settled one. Windows and the daily counts
    move from ``received_at`` to ``occurred_at``: their indexes are replaced and the counts rebuilt.
    Reads every payload once: on a large database, expect it to take minutes.
    """
    for table, columns in (
        ("conversations", ("occurred_at", "enqueued_at")),
        ("insights", ("occurred_at",)),
        ("insight_history", ("occurred_at",)),
    ):
        _add_columns(db, table, {column: "TIMESTAMP" for column in columns})
    _fill_occurred_at(db)
    db.execute_sql(
        "UPDATE conversations SET enqueued_at = CASE WHEN status IN ('queued', 'processing') "
        "THEN updated_at ELSE received_at END WHERE enqueued_at IS NULL"
    )
    for table in ("insights", "insight_history"):
        db.execute_sql(
            f"UPDATE {table} SET occurred_at = (SELECT occurred_at FROM conversations "
            f"WHERE conversations.id = {table}.conversation_id) WHERE occurred_at IS NULL"
        )
    for index in RECEIVED_AT_INDEXES:
        db.execute_sql(f"DROP INDEX IF EXISTS {index}")
    Conversation._schema.create_indexes(safe=True)
    Insight._schema.create_indexes(safe=True)
    rollup_check.rebuild()


RECEIVED_AT_INDEXES = (
    "conversation_received_at_id",
    "insight_received_at_conversation_id",  # Peewee names them by model
    "insight_received_at_sentiment_score_confidence",
    "insight_confidence_received_at_sentiment_score",
)


def _fill_occurred_at(db: Database, chunk: int = 1000) -> None:
    """``occurred_at`` for every conversation without one, from its payload, a chunk at a time."""
    after = ""
    while True:
        rows = (
            Conversation.select(Conversation.id, Conversation.payload, Conversation.received_at)
            .where(Conversation.occurred_at.is_null(), Conversation.id > after)
            .order_by(Conversation.id)
            .limit(chunk)
        )
        pairs = [
            (Conversation.occurred_at.db_value(occurred_at_in_payload(json.loads(c.payload), c.received_at)), c.id)
            for c in rows
        ]
        if not pairs:
            return
        db.cursor().executemany(f"UPDATE conversations SET occurred_at = {db.param} WHERE id = {db.param}", pairs)
        after = pairs[-1][1]


def _idempotency_keys(db: Database) -> None:
    db.create_tables([IdempotencyKey], safe=True)


def _bulk_lane(db: Database) -> None:
    """Lanes (every conversation so far was real-time) and the bulk lane's provider batches."""
    lane = "VARCHAR(16) NOT NULL DEFAULT 'realtime'"
    _add_columns(db, "conversations", {"lane": lane, "provider_batch": "VARCHAR(64)"})
    for table in ("insights", "insight_history"):
        _add_columns(db, table, {"lane": lane})
    db.create_tables([ProviderBatch, ProviderBatchRequest], safe=True)
    Conversation._schema.create_indexes(safe=True)


def _insight_usage(db: Database) -> None:
    """Each insight's share of tokens and its cost, and their daily totals by lane (``store.usage``).
    Insights stored before have none: their ``usage`` was the whole call's, and how many conversations
    shared that call was not kept."""
    for table in ("insights", "insight_history"):
        _add_columns(
            db,
            table,
            {
                column: "DOUBLE PRECISION" if isinstance(db, PostgresqlDatabase) else "REAL"
                for column in ("prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")
            },
        )
    db.create_tables([InsightUsage], safe=True)
    usage.rebuild()


def _suggested_cluster(db: Database) -> None:
    """What a closed taxonomy's ``other`` suggests (``insights clusters suggest``), and its index."""
    for table in ("insights", "insight_history"):
        _add_columns(db, table, {"suggested_cluster": "VARCHAR(64)"})
    Insight._schema.create_indexes(safe=True)


def _trend_rollups(db: Database) -> None:
    """Sums of sentiment scores beside the daily counts, the counts by score band alone, and the counts'
    cells per cluster, for exact trends from whole days (``store.trends``); filled from the insights
    already stored."""
    _add_columns(
        db,
        "insight_counts",
        {
            "score_sum": "DOUBLE PRECISION NOT NULL DEFAULT 0"
            if isinstance(db, PostgresqlDatabase)
            else "REAL NOT NULL DEFAULT 0"
        },
    )
    db.execute_sql("DROP INDEX IF EXISTS insightcount_day_score_band_confidence_band_total")  # now covers score_sum too
    InsightCount._schema.create_indexes(safe=True)
    db.create_tables(rollup_check.ROLLUPS, safe=True)
    rollup_check.rebuild()


def _worker_leases(db: Database) -> None:
    """Claims name their worker process, and workers hold a lease they renew while alive: a killed
    worker's conversations are sent again as soon as its lease lapses, a live one's never."""
    _add_columns(db, "conversations", {"claimed_by": "VARCHAR(64)"})
    db.create_tables([WorkerLease], safe=True)


def _billed_cost(db: Database) -> None:
    """A provider batch keeps what xAI billed for its results. Batches collected before it kept only their
    tokens: their cost is not known as billed, so their results count as unpriced."""
    real = "DOUBLE PRECISION" if isinstance(db, PostgresqlDatabase) else "REAL"
    _add_columns(
        db,
        "provider_batches",
        {"cost_usd": f"{real} NOT NULL DEFAULT 0", "unpriced_results": "INTEGER NOT NULL DEFAULT 0"},
    )
    db.execute_sql("UPDATE provider_batches SET unpriced_results = num_success + num_error WHERE prompt_tokens > 0")


def _isolated(db: Database) -> None:
    """Conversations remember whether their own bulk request failed: only those are sent alone again.
    Those waiting now were sent back before it was known why: they share requests again."""
    _add_columns(db, "conversations", {"isolated": "BOOLEAN NOT NULL DEFAULT FALSE"})


def _webhooks(db: Database) -> None:
    """Webhook subscriptions and their outbox (``store.outbox``)."""
    db.create_tables([WebhookSubscription, WebhookDelivery], safe=True)


def _failed_steps(db: Database) -> None:
    """A provider batch counts the steps that failed in a row for a reason no outcome explains (``actors.bulk``)."""
    _add_columns(db, "provider_batches", {"failed_steps": "INTEGER NOT NULL DEFAULT 0"})


MIGRATIONS: list[tuple[str, Callable[[Database], None]]] = [
    ("0001_initial", _initial_schema),
    ("0002_insight_history", _insight_history),
    ("0003_insight_filter_index", _insight_filter_index),
    ("0004_insight_counts", _insight_counts),
    ("0005_claim_token", _claim_token),
    ("0006_occurred_at", _occurred_at),
    ("0007_idempotency_keys", _idempotency_keys),
    ("0008_bulk_lane", _bulk_lane),
    ("0009_insight_usage", _insight_usage),
    ("0010_suggested_cluster", _suggested_cluster),
    ("0011_trend_rollups", _trend_rollups),
    ("0012_worker_leases", _worker_leases),
    ("0013_billed_cost", _billed_cost),
    ("0014_isolated", _isolated),
    ("0015_webhooks", _webhooks),
    ("0016_failed_steps", _failed_steps),
]


@contextlib.contextmanager
def _exclusive_transaction(db: Database) -> Iterator[None]:
    """A transaction that only one process at a time may hold."""
    if isinstance(db, PostgresqlDatabase):
        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
            yield
    else:
        with db.atomic("IMMEDIATE"):
            yield


def migrate(db: Database) -> list[str]:
    """Apply the migrations not yet applied; return their names. Safe for processes starting together:
    everything, the bookkeeping table included, happens under the lock."""
    if not isinstance(db, PostgresqlDatabase):
        _use_wal(db)
    applied_now = []
    with _exclusive_transaction(db):
        db.execute_sql("CREATE TABLE IF NOT EXISTS schema_migrations (name VARCHAR(128) PRIMARY KEY)")
        done = {row[0] for row in db.execute_sql("SELECT name FROM schema_migrations").fetchall()}
        for name, apply in MIGRATIONS:
            if name not in done:
                apply(db)
                db.execute_sql(f"INSERT INTO schema_migrations (name) VALUES ({db.param})", (name,))
                applied_now.append(name)
    return applied_now


def pending(db: Database) -> list[str]:
    """The migrations ``db`` still lacks, found without changing anything, for commands that only read:
    they refuse a database whose schema is not current rather than migrate it."""
    done: set[str] = set()
    if db.table_exists("schema_migrations"):
        done = {row[0] for row in db.execute_sql("SELECT name FROM schema_migrations").fetchall()}
    return [name for name, _apply in MIGRATIONS if name not in done]


def _use_wal(db: Database, patience: float = 30.0) -> None:
    """Put the SQLite file in WAL mode (it stays so). Switching needs the file to itself and SQLite says
    "locked" at once rather than wait, so processes starting together take turns here."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute_sql("PRAGMA journal_mode=wal")
            return
        except OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    """``python -m store.migrations``: migrate the configured database (the Procfile's ``release``)."""
    from settings import settings_or_exit
    from store.db import describe, open_database

    settings = settings_or_exit()
    applied = migrate(open_database(settings))
    print(f"{describe(settings)}: applied {', '.join(applied) if applied else 'nothing, schema is current'}")


if __name__ == "__main__":
    main()
