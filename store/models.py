"""Peewee models. Times are naive UTC in the database (both backends store them alike)."""

from __future__ import annotations

from peewee import (
    SQL,
    BooleanField,
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

from insights.lanes import BULK, LANES, REALTIME  # noqa: F401 - re-exported beside the statuses

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
    occurred_at = DateTimeField(null=True)  # when it happened (insights.incoming.occurred_at_of): windows use it
    enqueued_at = DateTimeField(null=True)  # when its current wait began: accepted, reprocessed or requeued
    lane = CharField(
        max_length=16, default=REALTIME, constraints=[SQL("DEFAULT 'realtime'")]
    )  # as migration 0008 adds it
    provider_batch = CharField(max_length=64, null=True)  # the bulk lane's batch it was last sent in (ProviderBatch)
    claimed_by = CharField(max_length=64, null=True)  # the worker process whose claim it is under (WorkerLease)
    # Its own bulk request failed (not a batch ended as a whole): the next holds it alone (store.provider_batches)
    isolated = BooleanField(default=False, constraints=[SQL("DEFAULT FALSE")])  # as migration 0014 adds it

    class Meta:
        table_name = "conversations"
        indexes = (
            (("status", "updated_at"), False),  # the reconciler's scan for stuck work
            (("status", "enqueued_at"), False),  # the oldest waiting one
            (("occurred_at", "id"), False),  # windows: summaries, reprocessing
            (("lane", "status", "enqueued_at"), False),  # the bulk lane's waiting conversations, oldest first
        )


class InsightFields(BaseModel):
    """What an analysis says about a conversation, and where it came from."""

    received_at = DateTimeField()
    occurred_at = DateTimeField(null=True)  # the conversation's, copied for the window query (see Conversation)
    sentiment_score = DoubleField()  # double precision on PostgreSQL too, where FloatField is a 4-byte real
    clusters = TextField()  # JSON list of slugs
    suggested_cluster = CharField(max_length=64, null=True)  # a closed taxonomy's "other" names its topic here
    confidence = DoubleField()
    reasoning = TextField()
    model = CharField(max_length=128)
    prompt_version = CharField(max_length=64)
    raw_response = TextField()
    usage = TextField(null=True)  # JSON object of token counts, when the analyzer reports them
    lane = CharField(
        max_length=16, default=REALTIME, constraints=[SQL("DEFAULT 'realtime'")]
    )  # the conversation's, when analyzed
    # Its share of the call's tokens (shared evenly by the conversations of the call) and their cost
    # (insights.costs); NULL when the analyzer reported none, or for a cost, when the model has no price.
    prompt_tokens = DoubleField(null=True)
    cached_tokens = DoubleField(null=True)
    completion_tokens = DoubleField(null=True)
    cost_usd = DoubleField(null=True)
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
            (("suggested_cluster", "occurred_at"), False),  # insights clusters suggest: only the suggestions
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
    score_sum = DoubleField(default=0.0, constraints=[SQL("DEFAULT 0")])  # of their sentiment scores: exact means

    class Meta:
        table_name = "insight_counts"
        primary_key = CompositeKey("day", "score_band", "confidence_band")
        indexes = (
            (("day", "score_band", "confidence_band", "total", "score_sum"), False),
        )  # sums from the index alone


class ScoreTotals(BaseModel):
    """What the trends' rollups keep for a UTC day of ``occurred_at`` and a score band (see ``store.trends``):
    how many insights, and the sum of their sentiment scores."""

    day = DateField()
    score_band = IntegerField()
    total = IntegerField()
    score_sum = DoubleField()


class InsightScoreCount(ScoreTotals):
    """The cells of ``InsightCount`` added up over confidence: some fifty rows a day where the cells are
    hundreds (trends without ``min_confidence``)."""

    class Meta:
        table_name = "insight_score_counts"
        primary_key = CompositeKey("day", "score_band")
        indexes = ((("day", "score_band", "total", "score_sum"), False),)  # sums from the index alone


class InsightClusterCount(BaseModel):
    """How many insights of a UTC day of ``occurred_at`` name a cluster (see ``store.counts``)."""

    day = DateField()
    cluster = CharField(max_length=200)
    total = IntegerField()

    class Meta:
        table_name = "insight_cluster_counts"
        primary_key = CompositeKey("day", "cluster")
        indexes = ((("day", "cluster", "total"), False),)  # sums from the index alone


class InsightClusterCell(ScoreTotals):
    """The cells of ``InsightCount`` for the insights that name one cluster: a cluster's trend, and the
    top clusters among insights of one sentiment or confidence (see ``store.trends``)."""

    cluster = CharField(max_length=200)
    confidence_band = IntegerField()

    class Meta:
        table_name = "insight_cluster_cells"
        primary_key = CompositeKey("cluster", "day", "score_band", "confidence_band")
        indexes = (  # sums from the indexes alone: one cluster's days, and every cluster of some days
            (("cluster", "day", "score_band", "confidence_band", "total", "score_sum"), False),
            (("day", "score_band", "confidence_band", "cluster", "total"), False),
        )


class InsightClusterScoreCount(ScoreTotals):
    """The cells of ``InsightClusterCell`` added up over confidence (trends without ``min_confidence``)."""

    cluster = CharField(max_length=200)

    class Meta:
        table_name = "insight_cluster_score_counts"
        primary_key = CompositeKey("cluster", "day", "score_band")
        indexes = (  # sums from the indexes alone: one cluster's days, and every cluster of some days
            (("cluster", "day", "score_band", "total", "score_sum"), False),
            (("day", "score_band", "cluster", "total"), False),
        )


class InsightClusterConfidenceCount(BaseModel):
    """The cells of ``InsightClusterCell`` added up over score bands: top clusters under ``min_confidence``
    alone read some 40 rows a day and cluster where the cells are hundreds."""

    day = DateField()
    confidence_band = IntegerField()
    cluster = CharField(max_length=200)
    total = IntegerField()

    class Meta:
        table_name = "insight_cluster_confidence_counts"
        primary_key = CompositeKey("day", "confidence_band", "cluster")
        indexes = ((("day", "confidence_band", "cluster", "total"), False),)  # sums from the index alone


class InsightUsage(BaseModel):
    """Tokens and cost of the insights of a UTC day of ``occurred_at`` and a lane (see ``store.usage``)."""

    day = DateField()
    lane = CharField(max_length=16)
    insights = IntegerField()
    priced = IntegerField()  # those with a cost
    prompt_tokens = DoubleField()
    cached_tokens = DoubleField()
    completion_tokens = DoubleField()
    cost_usd = DoubleField()

    class Meta:
        table_name = "insight_usage"
        primary_key = CompositeKey("day", "lane")


class IdempotencyKey(BaseModel):
    """A client's ``Idempotency-Key``, scoped to its API key and endpoint and hashed (``store.idempotency``)."""

    key = CharField(max_length=64, primary_key=True)
    request_hash = CharField(max_length=64)  # what the first request with this key asked for
    created_at = DateTimeField(index=True)

    class Meta:
        table_name = "idempotency_keys"


OPEN, SUBMITTED, ENDED = "open", "submitted", "ended"  # a provider batch's life (actors.bulk)
BATCH_STATES = (OPEN, SUBMITTED, ENDED)


class ProviderBatch(BaseModel):
    """A batch of the bulk lane at xAI's Batch API. Committed, with its requests, before anything is sent:
    a worker killed or a Redis wiped at any point finds it here and carries on."""

    id = CharField(max_length=64, primary_key=True)  # ours: names its requests (ProviderBatchRequest.id)
    provider_id = CharField(max_length=128, null=True)  # xAI's batch_id, once created there
    state = CharField(max_length=16, default=OPEN)  # open (requests being sent) -> submitted -> ended
    claim_token = CharField(max_length=32)  # its conversations' claim (store.claims.Claim)
    conversations = IntegerField()
    created_at = DateTimeField()
    submitted_at = DateTimeField(null=True)
    ended_at = DateTimeField(null=True)
    end_reason = TextField(null=True)  # completed, expired, cancelled
    cancel_requested = BooleanField(default=False)
    next_look_at = DateTimeField()  # when a worker next sends, polls or collects
    poll_seconds = DoubleField()  # the current polling interval (doubling up to BULK_POLL_MAX_SECONDS)
    worked_until = DateTimeField(null=True)  # a worker's lease on it: one at a time
    last_error = TextField(null=True)  # the Batch API's last failure, while it is retried
    failed_steps = IntegerField(default=0)  # steps failed in a row for a reason no outcome explains (a bug)
    num_requests = IntegerField(default=0)  # the provider's counters, as last polled
    num_pending = IntegerField(default=0)
    num_success = IntegerField(default=0)
    num_error = IntegerField(default=0)
    num_cancelled = IntegerField(default=0)
    prompt_tokens = IntegerField(default=0)  # the usage of the results collected so far
    cached_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)
    cost_usd = DoubleField(default=0)  # what xAI billed for them (or their price, when a result reports no cost)
    unpriced_results = IntegerField(default=0)  # results whose cost is not known (no billed cost, no price)

    class Meta:
        table_name = "provider_batches"
        indexes = ((("state", "next_look_at"), False),)


class ProviderBatchRequest(BaseModel):
    """One request of a provider batch: one chat completion for up to ``BATCH_SIZE`` conversations."""

    id = CharField(max_length=80, primary_key=True)  # the batch_request_id: "<batch id>-<n>", the same on every resend
    provider_batch = ForeignKeyField(ProviderBatch, column_name="provider_batch_id", on_delete="CASCADE")
    conversation_ids = TextField()  # JSON list
    submitted = BooleanField(default=False)  # the provider has it
    settled = BooleanField(default=False)  # its result (or its absence) is stored

    class Meta:
        table_name = "provider_batch_requests"
        indexes = ((("provider_batch", "submitted"), False),)


class WorkerLease(BaseModel):
    """A live worker process: it renews ``expires_at`` while its event loop turns (``actors.calls``); the
    conversations it claimed are sent again once the lease has lapsed (``actors.reconciler``)."""

    worker = CharField(max_length=64, primary_key=True)
    expires_at = DateTimeField()

    class Meta:
        table_name = "worker_leases"
