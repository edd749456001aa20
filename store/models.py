"""Peewee models. Times are naive UTC in the database (both backends store them alike)."""

from __future__ import annotations

from peewee import (
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

database = DatabaseProxy()

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
STATUSES = (QUEUED, PROCESSING, COMPLETED, FAILED)


class BaseModel(Model):
    class Meta:
        database = database


class Conversation(BaseModel):
    """An accepted conversation; ``payload`` is its canonical JSON (messages and metadata)."""

    id = CharField(max_length=128, primary_key=True)
    status = CharField(max_length=16, default=QUEUED)
    payload = TextField()
    payload_hash = CharField(max_length=64)
    received_at = DateTimeField()
    updated_at = DateTimeField()
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    claim_token = CharField(max_length=32, null=True)  # the latest claim's: only its result is stored (store.results)
    # Always written; nullable only because migration 0006 adds them to tables that have rows.
    occurred_at = DateTimeField(null=True)  # when it happened (insights.schemas.occurred_at_of): windows use it
    enqueued_at = DateTimeField(null=True)  # when its current wait began: accepted, reprocessed or requeued

    class Meta:
        table_name = "conversations"
        indexes = (
            (("status", "updated_at"), False),  # the reconciler's scan for stuck work
            (("status", "enqueued_at"), False),  # the oldest waiting one
            (("occurred_at", "id"), False),  # windows: summaries, reprocessing
        )


class InsightFields(BaseModel):
    """What an analysis says about a conversation, and where it came from."""

    received_at = DateTimeField()
    occurred_at = DateTimeField(null=True)  # the conversation's, copied for the window query (see Conversation)
    sentiment_score = DoubleField()  # double precision on PostgreSQL too, where FloatField is a 4-byte real
    clusters = TextField()  # JSON list of slugs
    confidence = DoubleField()
    reasoning = TextField()
    model = CharField(max_length=128)
    prompt_version = CharField(max_length=64)
    raw_response = TextField()
    usage = TextField(null=True)  # JSON object of token counts, when the analyzer reports them
    analyzed_at = DateTimeField()


class Insight(InsightFields):
    """The latest analysis of one conversation. Its times are copied from it, ``occurred_at`` for windows."""

    conversation = ForeignKeyField(Conversation, primary_key=True, column_name="conversation_id", on_delete="CASCADE")

    class Meta:
        table_name = "insights"
        indexes = (
            (("occurred_at", "conversation"), False),  # window pages, in keyset order
            (("occurred_at", "sentiment_score", "confidence"), False),  # counts with filters, from the index alone
            (("confidence", "occurred_at", "sentiment_score"), False),  # a min_confidence between two bands
        )


class InsightHistory(InsightFields):
    """Earlier analyses of a conversation, kept when it is reprocessed (by prompt version and model)."""

    conversation = ForeignKeyField(Conversation, column_name="conversation_id", on_delete="CASCADE")
    superseded_at = DateTimeField()

    class Meta:
        table_name = "insight_history"
        indexes = ((("conversation", "analyzed_at"), False),)


class InsightCount(BaseModel):
    """How many insights one cell holds: a UTC day of ``occurred_at``, a sentiment-score band and a
    confidence band (see ``store.counts``). Kept in the transaction that writes the insights it counts."""

    day = DateField()
    score_band = IntegerField()
    confidence_band = IntegerField()
    total = IntegerField()

    class Meta:
        table_name = "insight_counts"
        primary_key = CompositeKey("day", "score_band", "confidence_band")
        indexes = ((("day", "score_band", "confidence_band", "total"), False),)  # sums from the index alone


class InsightClusterCount(BaseModel):
    """How many insights of a UTC day of ``occurred_at`` name a cluster (see ``store.counts``)."""

    day = DateField()
    cluster = CharField(max_length=200)
    total = IntegerField()

    class Meta:
        table_name = "insight_cluster_counts"
        primary_key = CompositeKey("day", "cluster")
        indexes = ((("day", "cluster", "total"), False),)  # sums from the index alone


class IdempotencyKey(BaseModel):
    """A client's ``Idempotency-Key``, scoped to its API key and endpoint and hashed (``store.idempotency``)."""

    key = CharField(max_length=64, primary_key=True)
    request_hash = CharField(max_length=64)  # what the first request with this key asked for
    created_at = DateTimeField(index=True)

    class Meta:
        table_name = "idempotency_keys"


MODELS = (Conversation, Insight, InsightHistory, InsightCount, InsightClusterCount, IdempotencyKey)
