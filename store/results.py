"""Storing an analysis: each valid row becomes an insight (moving it in the daily counts, ``store.counts``)
and every conversation of the batch is settled: ``completed``, back to ``queued`` for another attempt, or
``failed`` once out of attempts (the status rules of ``store.queries``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import Value

from insights.schemas import AnalysisResult
from store import counts
from store.db import locked, write_transaction
from store.models import COMPLETED, FAILED, QUEUED, Conversation, Insight, InsightHistory, database
from store.queries import OPEN_STATUSES, utcnow


@dataclass
class StoreOutcome:
    completed: list[str]
    retry: list[str]  # back to queued for another attempt
    failed: list[str]  # out of attempts


def record_results(result: AnalysisResult, max_retries: int) -> StoreOutcome:
    """Store valid rows as insights (moving them in the daily counts, ``store.counts``) and settle every
    conversation of the batch, in one transaction.

    Idempotent: a conversation that is no longer open (already completed or failed) is left untouched,
    so running the same result twice creates no second insight.
    """
    rows = {row.conversation_id: row for row in result.rows}
    now = utcnow()
    outcome = StoreOutcome([], [], [])
    rollup_changes = counts.RollupChanges()
    with write_transaction(database.obj):
        open_rows = locked(
            Conversation.select(Conversation.id, Conversation.attempts, Conversation.received_at).where(
                Conversation.id.in_(result.conversation_ids), Conversation.status.in_(OPEN_STATUSES)
            )
        )
        for conversation in open_rows:
            row = rows.get(conversation.id)
            if row is not None:
                _store_insight(conversation, row, result, now, rollup_changes)
                outcome.completed.append(conversation.id)
            else:
                reason = result.rejected.get(conversation.id, "the analyzer returned no row for this conversation")
                exhausted = conversation.attempts >= max_retries
                (
                    Conversation.update(status=FAILED if exhausted else QUEUED, last_error=reason, updated_at=now)
                    .where(Conversation.id == conversation.id)
                    .execute()
                )
                (outcome.failed if exhausted else outcome.retry).append(conversation.id)
        if outcome.completed:
            (
                Conversation.update(status=COMPLETED, last_error=None, updated_at=now)
                .where(Conversation.id.in_(outcome.completed))
                .execute()
            )
        rollup_changes.apply()
    return outcome


def _store_insight(conversation: Conversation, row: Any, result: AnalysisResult, now: datetime, rollup_changes: counts.RollupChanges) -> None:
    fields = dict(
        received_at=conversation.received_at,
        sentiment_score=row.sentiment_score,
        clusters=json.dumps(row.clusters),
        confidence=row.confidence,
        reasoning=row.reasoning,
        model=result.model,
        prompt_version=result.prompt_version,
        raw_response=result.raw_response,
        usage=json.dumps(result.usage) if result.usage is not None else None,
        analyzed_at=now,
    )
    previous = (
        Insight.select(Insight.received_at, Insight.sentiment_score, Insight.confidence, Insight.clusters)
        .where(Insight.conversation == conversation.id)
        .tuples()
        .first()
    )
    if previous is not None:  # a reprocessed conversation: its insight leaves the daily counts for history
        received_at, sentiment_score, confidence, clusters = previous
        rollup_changes.add(received_at, sentiment_score, confidence, json.loads(clusters), delta=-1)
        _keep_as_history(conversation.id, now)
    rollup_changes.add(conversation.received_at, row.sentiment_score, row.confidence, row.clusters)
    (
        Insight.insert(conversation=conversation.id, **fields)
        .on_conflict(conflict_target=[Insight.conversation], update=fields)
        .execute()
    )


HISTORY_FIELDS = [f for f in InsightHistory._meta.sorted_fields if f.name not in ("id", "superseded_at")]


def _keep_as_history(conversation_id: str, now: datetime) -> None:
    """Copy a conversation's current insight to ``insight_history`` before it is replaced."""
    source = [getattr(Insight, f.name) for f in HISTORY_FIELDS]
    previous = Insight.select(*source, Value(now)).where(Insight.conversation == conversation_id)
    InsightHistory.insert_from(previous, [*HISTORY_FIELDS, InsightHistory.superseded_at]).execute()
