"""Storing an analysis: each valid row becomes an insight (moving it in the daily counts, ``store.counts``)
and every conversation of the batch is settled: ``completed``, back to ``queued`` for another attempt, or
``failed`` once out of attempts (the status rules of ``store.queries``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from peewee import DataError, IntegrityError, Value

from insights.costs import Tokens, cost_usd, tokens_of
from insights.schemas import AnalysisResult, InsightRow, storable
from settings import get_settings
from store import rollups
from store.db import locked, unindexed, write_transaction
from store.models import (
    COMPLETED,
    FAILED,
    PROCESSING,
    QUEUED,
    Conversation,
    Insight,
    InsightHistory,
    database,
)
from store.queries import utcnow

logger = logging.getLogger(__name__)


@dataclass
class StoreOutcome:
    completed: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)  # back to queued for another attempt
    failed: list[str] = field(default_factory=list)  # out of attempts
    ignored: list[str] = field(default_factory=list)  # not processing under the result's claim: left untouched


def record_results(result: AnalysisResult, max_retries: int) -> StoreOutcome:
    """Store valid rows as insights (moving them in the daily counts, ``store.counts``) and settle the
    conversations of the batch, in one transaction.

    Only conversations still ``processing`` under the result's claim (``result.claim_token``) are
    settled; the others are left untouched (``ignored``): already settled by this very result, reopened
    for reprocessing, or claimed again since, so a result delivered late or twice neither overwrites a
    later analysis nor cancels a reprocess, and running the same result twice creates no second insight.

    Each insight is written in a savepoint of its own: one the database refuses is rolled back alone, its
    changes to the daily counts dropped, and its conversation settled like one without a valid row, while
    its neighbours complete.
    """
    rows = {row.conversation_id: row for row in result.rows}
    tokens = tokens_of(result.usage)
    share = tokens.divided(len(result.conversation_ids)) if tokens and result.conversation_ids else None
    now = utcnow()
    outcome = StoreOutcome()
    rollup_changes = rollups.RollupChanges()
    with write_transaction(database.obj):
        claimed = list(locked(  # read to the end first: a savepoint rolled back would abort a pending read
            Conversation.select(Conversation.id, Conversation.attempts, Conversation.received_at, Conversation.occurred_at,
                                Conversation.lane).where(
                Conversation.id.in_(result.conversation_ids),
                unindexed(Conversation.status) == PROCESSING,  # by key: see store.db.unindexed
                Conversation.claim_token == result.claim_token,  # IS NULL for a result of a release before tokens
            )
        ))
        outcome.ignored = sorted(set(result.conversation_ids) - {c.id for c in claimed})
        for conversation in claimed:
            if conversation.id in rows:
                reason = _store_row(conversation, rows[conversation.id], result, share, now, rollup_changes)
            else:
                reason = get_settings().redact(result.rejected.get(conversation.id, "the analyzer returned no row for this conversation"))
            if reason is None:
                outcome.completed.append(conversation.id)
            else:
                _send_back(conversation, reason, max_retries, now, outcome)
        if outcome.completed:
            (
                Conversation.update(status=COMPLETED, last_error=None, updated_at=now)
                .where(Conversation.id.in_(outcome.completed))
                .execute()
            )
        rollup_changes.apply()
    return outcome


# What a database (or its driver, before sending: psycopg2 refuses NUL, either fails to encode a lone
# surrogate with ValueError) says of a value it will not store. Others, such as a lost connection or a
# lock timeout, are not the row's fault: they fail the transaction, and the message is retried.
REFUSED_VALUE = (IntegrityError, DataError, ValueError)


def _store_row(conversation: Conversation, row: InsightRow, result: AnalysisResult, share: Tokens | None, now: datetime,
               rollup_changes: rollups.RollupChanges) -> str | None:
    """Store one insight in a savepoint, adding its moves to ``rollup_changes``; if the database refuses
    it, roll back just this row and return why."""
    try:
        with database.obj.atomic():
            row_changes = _store_insight(conversation, row, result, share, now)
    except REFUSED_VALUE as error:
        reason = _refusal(error)
        logger.error("%s: %s", conversation.id, reason, extra={"conversation_ids": [conversation.id]})
        return reason
    rollup_changes.include(row_changes)
    return None


def _refusal(error: Exception) -> str:
    """Why the database refused an insight, short and storable (PostgreSQL's second line, ``DETAIL``, may
    quote the whole row, raw response included)."""
    first_line = next(iter(str(error).strip().splitlines()), "")
    return storable(f"the database refused this insight ({type(error).__name__}: {first_line})")[:300]


def _send_back(conversation: Conversation, reason: str, max_retries: int, now: datetime, outcome: StoreOutcome) -> None:
    """A conversation without a stored insight: back to ``queued`` for another attempt, or ``failed``."""
    exhausted = conversation.attempts >= max_retries
    (
        Conversation.update(status=FAILED if exhausted else QUEUED, last_error=reason, updated_at=now)
        .where(Conversation.id == conversation.id)
        .execute()
    )
    (outcome.failed if exhausted else outcome.retry).append(conversation.id)


def _store_insight(conversation: Conversation, row: InsightRow, result: AnalysisResult, share: Tokens | None,
                   now: datetime) -> rollups.RollupChanges:
    """Write the insight (keeping a replaced one in history) with its ``share`` of the call's tokens and
    their cost; return how it moves the daily counts."""
    cost = cost_usd(share, result.model, conversation.lane, get_settings()) if share else None
    fields = dict(
        received_at=conversation.received_at,
        occurred_at=conversation.occurred_at,
        sentiment_score=row.sentiment_score,
        clusters=json.dumps(row.clusters),
        suggested_cluster=row.suggested_cluster,
        confidence=row.confidence,
        reasoning=row.reasoning,
        model=result.model,
        prompt_version=result.prompt_version,
        raw_response=result.raw_response,
        usage=json.dumps(result.usage) if result.usage is not None else None,
        lane=conversation.lane,
        prompt_tokens=share.prompt if share else None,
        cached_tokens=share.cached if share else None,
        completion_tokens=share.completion if share else None,
        cost_usd=cost,
        analyzed_at=now,
    )
    rollup_changes = rollups.RollupChanges()
    previous = Insight.select(*ROLLED_UP).where(Insight.conversation == conversation.id).first()
    if previous is not None:  # a reprocessed conversation: its insight leaves the daily counts for history
        rollup_changes.add(previous.occurred_at, previous.sentiment_score, previous.confidence, json.loads(previous.clusters), delta=-1)
        rollup_changes.usage.add(previous.occurred_at, previous.lane, stored_tokens(previous), previous.cost_usd, delta=-1)
        _keep_as_history(conversation.id, now)
    rollup_changes.add(conversation.occurred_at, row.sentiment_score, row.confidence, row.clusters)
    rollup_changes.usage.add(conversation.occurred_at, conversation.lane, share, cost)
    (
        Insight.insert(conversation=conversation.id, **fields)
        .on_conflict(conflict_target=[Insight.conversation], update=fields)
        .execute()
    )
    return rollup_changes


ROLLED_UP = (Insight.occurred_at, Insight.sentiment_score, Insight.confidence, Insight.clusters, Insight.lane,
             Insight.prompt_tokens, Insight.cached_tokens, Insight.completion_tokens, Insight.cost_usd)


def stored_tokens(insight: Insight) -> Tokens | None:
    """The tokens an insight records (none before migration 0009)."""
    if insight.prompt_tokens is None:
        return None
    return Tokens(insight.prompt_tokens, insight.cached_tokens or 0, insight.completion_tokens or 0)


HISTORY_FIELDS = [f for f in InsightHistory._meta.sorted_fields if f.name not in ("id", "superseded_at")]


def _keep_as_history(conversation_id: str, now: datetime) -> None:
    """Copy a conversation's current insight to ``insight_history`` before it is replaced."""
    source = [getattr(Insight, f.name) for f in HISTORY_FIELDS]
    previous = Insight.select(*source, Value(now)).where(Insight.conversation == conversation_id)
    InsightHistory.insert_from(previous, [*HISTORY_FIELDS, InsightHistory.superseded_at]).execute()
