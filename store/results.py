"""Storing an analysis: each valid row becomes an insight (moving it in the daily counts, ``store.counts``)
and every conversation of the batch is settled: ``completed``, back to ``queued`` for another attempt, or
``failed`` once out of attempts (the status rules of ``store.queries`` and ``store.claims``).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from peewee import DataError, IntegrityError, PostgresqlDatabase

from insights.costs import Tokens, cost_usd, tokens_of
from insights.schemas import AnalysisResult, InsightRow, storable
from settings import Settings
from store import insight_writes, outbox, rollups
from store.db import write_transaction
from store.models import (
    COMPLETED,
    FAILED,
    PROCESSING,
    QUEUED,
    Conversation,
    database,
)
from store.queries import utcnow
from store.statements import placeholders

logger = logging.getLogger(__name__)


@dataclass
class StoreOutcome:
    completed: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # back to queued for another attempt
    failed: list[str] = field(default_factory=list)  # out of attempts
    ignored: list[str] = field(default_factory=list)  # not processing under the result's claim: left untouched


def record_results(result: AnalysisResult, max_retries: int, settings: Settings) -> StoreOutcome:
    """Store valid rows as insights (moving them in the daily counts, ``store.counts``) and settle the
    conversations of the batch, in one transaction. ``settings`` price the tokens (``insights.costs``) and
    keep the Grok key out of the reasons stored for rows refused.

    Only conversations still ``processing`` under the result's claim (``result.claim_token``) are
    settled; the others are left untouched (``ignored``): already settled by this very result, reopened
    for reprocessing, or claimed again since, so a result delivered late or twice neither overwrites a
    later analysis nor cancels a reprocess, and running the same result twice creates no second insight.

    The insights are written together in a savepoint (``store.insight_writes``). Should the database
    refuse a value, that savepoint is rolled back and each insight is written in a savepoint of its own: one
    the database refuses is rolled back alone, its changes to the daily counts dropped, and its
    conversation settled like one without a valid row, while its neighbours complete.
    """
    rows = {row.conversation_id: row for row in result.rows}
    tokens = tokens_of(result.usage)
    share = tokens.divided(len(result.conversation_ids)) if tokens and result.conversation_ids else None
    now = utcnow()
    outcome = StoreOutcome()
    rollup_changes = rollups.RollupChanges()
    with write_transaction(database.obj):
        claimed = _claimed(result.conversation_ids, result.claim_token)
        outcome.ignored = sorted(set(result.conversation_ids) - {c.id for c in claimed})
        insights = _Insights(result, share, now, settings)
        written = [insights.of(c, rows[c.id]) for c in claimed if c.id in rows]
        refused = _store(written, now, rollup_changes)
        sent_back: defaultdict[tuple[str, str], list[str]] = defaultdict(list)  # (status, reason) -> conversations
        for conversation in claimed:
            if conversation.id in rows and conversation.id not in refused:
                outcome.completed.append(conversation.id)
                continue
            reason = refused.get(conversation.id) or settings.redact(
                result.rejected.get(conversation.id, "the analyzer returned no row for this conversation")
            )
            exhausted = conversation.attempts >= max_retries  # else back to queued for another attempt
            (outcome.failed if exhausted else outcome.retry).append(conversation.id)
            sent_back[(FAILED if exhausted else QUEUED, reason)].append(conversation.id)
        if outcome.completed:
            _settle(outcome.completed, COMPLETED, None, now)
        for (status, reason), ids in sent_back.items():
            _settle(ids, status, reason, now)
        rollup_changes.apply()
        _report(written, refused, sent_back, claimed, now)
    return outcome


def _report(
    written: list[dict[str, Any]],
    refused: dict[str, str],
    sent_back: dict[tuple[str, str], list[str]],
    claimed: list[_Claimed],
    now: datetime,
) -> None:
    """The webhooks' events of this settlement, in its transaction (``store.outbox``)."""
    outbox.completed_events([insight for insight in written if insight["conversation_id"] not in refused], now)
    occurred = {conversation.id: conversation.occurred_at for conversation in claimed}
    failures = [
        (i, reason, occurred[i]) for (status, reason), ids in sent_back.items() if status == FAILED for i in ids
    ]
    outbox.failed_events(failures, now)


class _Claimed(NamedTuple):
    id: str
    attempts: int
    received_at: datetime
    occurred_at: datetime | None
    lane: str


def _claimed(ids: list[str], claim_token: str | None) -> list[_Claimed]:
    """The conversations of ``ids`` still ``processing`` under ``claim_token``, locked where the database
    locks rows (``store.db.locked``), read to the end: a savepoint rolled back would abort a pending read.
    SQL written directly, as every statement of the write path (``store.statements``); ``status || ''``
    keeps the lookup on the key (``store.db.unindexed``)."""
    if not ids:
        return []
    db = database.obj
    token = "IS NULL" if claim_token is None else f"= {db.param}"  # NULL: a result of a release before tokens
    lock = " FOR UPDATE" if isinstance(db, PostgresqlDatabase) else ""
    cursor = db.execute_sql(
        f'SELECT id, attempts, received_at, occurred_at, lane FROM "{Conversation._meta.table_name}" '
        f"WHERE id IN {placeholders(len(ids))} AND status || '' = {db.param} AND claim_token {token}{lock}",
        [*ids, PROCESSING, *([] if claim_token is None else [claim_token])],
    )
    as_datetime = Conversation.received_at.python_value  # SQLite hands back text
    return [
        _Claimed(conversation_id, attempts, as_datetime(received_at), as_datetime(occurred_at), lane)
        for conversation_id, attempts, received_at, occurred_at, lane in cursor.fetchall()
    ]


# What a database (or its driver, before sending: psycopg2 refuses NUL, either fails to encode a lone
# surrogate with ValueError) says of a value it will not store. Others, such as a lost connection or a
# lock timeout, are not the row's fault: they fail the transaction, and the message is retried.
REFUSED_VALUE = (IntegrityError, DataError, ValueError)


class _Insights:
    """The insights of one result: each row's columns, with its ``share`` of the call's tokens and their
    cost (priced once a lane)."""

    def __init__(self, result: AnalysisResult, share: Tokens | None, now: datetime, settings: Settings) -> None:
        self.result, self.share, self.now, self.settings = result, share, now, settings
        self.usage = json.dumps(result.usage) if result.usage is not None else None
        self.costs: dict[str, float | None] = {}

    def of(self, conversation: _Claimed, row: InsightRow) -> dict[str, Any]:
        share, result, lane = self.share, self.result, conversation.lane
        if lane not in self.costs:
            self.costs[lane] = cost_usd(share, result.model, lane, self.settings) if share else None
        return {
            "conversation_id": conversation.id,
            "received_at": conversation.received_at,
            "occurred_at": conversation.occurred_at,
            "sentiment_score": row.sentiment_score,
            "clusters": json.dumps(row.clusters),
            "suggested_cluster": row.suggested_cluster,
            "confidence": row.confidence,
            "reasoning": row.reasoning,
            "model": result.model,
            "prompt_version": result.prompt_version,
            "raw_response": result.raw_response,
            "usage": self.usage,
            "lane": lane,
            "prompt_tokens": share.prompt if share else None,
            "cached_tokens": share.cached if share else None,
            "completion_tokens": share.completion if share else None,
            "cost_usd": self.costs[lane],
            "analyzed_at": self.now,
        }


def _store(insights: list[dict[str, Any]], now: datetime, rollup_changes: rollups.RollupChanges) -> dict[str, str]:
    """Write ``insights``, adding their moves to ``rollup_changes``; return why the database refused any
    (conversation -> reason). All at once first; if a value is refused, each in a savepoint of its own."""
    if not insights:
        return {}
    try:
        with database.obj.atomic():
            changes = insight_writes.write(insights, now)
    except REFUSED_VALUE:  # rare (validation cleans what databases refuse): find the culprits one by one
        return _store_one_by_one(insights, now, rollup_changes)
    rollup_changes.include(changes)
    return {}


def _store_one_by_one(
    insights: list[dict[str, Any]], now: datetime, rollup_changes: rollups.RollupChanges
) -> dict[str, str]:
    """Write each insight in a savepoint of its own: one the database refuses is rolled back alone (why is
    logged and returned), its neighbours are stored."""
    refused = {}
    for insight in insights:
        conversation_id = insight["conversation_id"]
        try:
            with database.obj.atomic():
                changes = insight_writes.write([insight], now)
        except REFUSED_VALUE as error:
            refused[conversation_id] = _refusal(error)
            logger.error(
                "%s: %s", conversation_id, refused[conversation_id], extra={"conversation_ids": [conversation_id]}
            )
            continue
        rollup_changes.include(changes)
    return refused


def _refusal(error: Exception) -> str:
    """Why the database refused an insight, short and storable (PostgreSQL's second line, ``DETAIL``, may
    quote the whole row, raw response included)."""
    first_line = next(iter(str(error).strip().splitlines()), "")
    return storable(f"the database refused this insight ({type(error).__name__}: {first_line})")[:300]


def _settle(ids: list[str], status: str, reason: str | None, now: datetime) -> None:
    """Move conversations ``ids`` to ``status`` with ``reason`` as their last error."""
    db = database.obj
    db.execute_sql(
        f'UPDATE "{Conversation._meta.table_name}" SET status = {db.param}, last_error = {db.param}, '
        f"updated_at = {db.param} WHERE id IN {placeholders(len(ids))}",
        [status, reason, now, *ids],
    )
