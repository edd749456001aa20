"""The outbox: events written in the transaction of the change they report, one delivery per subscription
that wants them, so that a crash between the commit and the request loses nothing, and no request reports
a change that was rolled back. The worker's dispatcher sends them (``actors.webhooks``).

Each ``*_events`` function is called inside its caller's write transaction, after the change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from store import subscriptions
from store.models import ProviderBatch, database
from store.statements import MAX_PARAMETERS, placeholders
from store.webhook_models import PENDING, WebhookDelivery
from webhooks import events

COLUMNS = ("id", "subscription_id", "event_type", "body", "status", "attempts", "next_attempt_at", "created_at")


Items = list[dict[str, Any]]


def record(event_type: str, items: Items | Callable[[], Items], now: datetime) -> int:
    """One delivery of each item's event for each enabled subscription that wants ``event_type``; return how
    many. Cheap when nobody subscribes: one read of the (small) subscriptions table, and ``items``, when a
    function, is not even called."""
    wanting = subscriptions.wanting(event_type) if items else []
    made = (items() if callable(items) else items) if wanting else []
    rows = []
    for subscription in wanting:
        for data in made:
            event_id = events.new_event_id()
            body = events.event(event_type, event_id, now, data)
            rows.append((event_id, subscription.id, event_type, body, PENDING, 0, now, now))
    per_statement = MAX_PARAMETERS // len(COLUMNS)
    for offset in range(0, len(rows), per_statement):
        chunk = rows[offset : offset + per_statement]
        database.obj.execute_sql(
            f'INSERT INTO "{WebhookDelivery._meta.table_name}" ({", ".join(COLUMNS)}) '
            f"VALUES {', '.join([placeholders(len(COLUMNS))] * len(chunk))}",
            [value for row in chunk for value in row],
        )
    return len(rows)


def completed_events(insights: list[dict[str, Any]], now: datetime) -> int:
    """``conversation.completed`` for each insight just stored (``store.results``'s columns)."""
    if not insights:
        return 0
    return record(events.COMPLETED, lambda: [_completed(insight) for insight in insights], now)


def _completed(insight: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": insight["conversation_id"],
        "status": "completed",
        "occurred_at": events.iso(insight["occurred_at"]),
        "insight": {
            "sentiment_score": insight["sentiment_score"],
            "clusters": json.loads(insight["clusters"]),
            "suggested_cluster": insight["suggested_cluster"],
            "confidence": insight["confidence"],
            "reasoning": insight["reasoning"],
            "model": insight["model"],
            "prompt_version": insight["prompt_version"],
            "analyzed_at": events.iso(insight["analyzed_at"]),
        },
    }


def failed_events(failures: list[tuple[str, str | None, datetime | None]], now: datetime) -> int:
    """``conversation.failed`` for each (conversation id, reason, when it occurred) just failed."""
    items = [
        {"conversation_id": conversation_id, "status": "failed", "occurred_at": events.iso(occurred), "reason": reason}
        for conversation_id, reason, occurred in failures
    ]
    return record(events.FAILED, items, now)


def batch_ended_event(batch: ProviderBatch, now: datetime) -> int:
    """``provider_batch.ended`` for a provider batch of the bulk lane just ended."""
    item = {
        "batch_id": batch.id,
        "provider_batch_id": batch.provider_id,
        "end_reason": batch.end_reason,
        "conversations": batch.conversations,
        "created_at": events.iso(batch.created_at),
        "ended_at": events.iso(batch.ended_at),
        "requests": {"total": batch.num_requests, "succeeded": batch.num_success, "failed": batch.num_error},
        "cost_usd": batch.cost_usd,
    }
    return record(events.BATCH_ENDED, [item], now)
