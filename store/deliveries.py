"""Deliveries on their way: claimed for a request under a lease, then delivered, tried again later, or
dead letters; listed, replayed and purged by operators (``insights webhooks``).

A claim sets the rows' ``lease_token`` and moves their ``next_attempt_at`` to the end of the lease: a
delivery whose worker dies (or whose message Redis lost) is due again then. An outcome is recorded only
under the claim's token, so a request that answers after its lease lapsed and its deliveries were claimed
again changes nothing (the receiver may have them twice: at least once, de-duplicated by event id).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from peewee import PostgresqlDatabase, fn

from store import subscriptions
from store.db import write_transaction
from store.models import database
from store.queries import utcnow
from store.webhook_models import DELIVERED, FAILED, PENDING, WebhookDelivery
from webhooks.retries import next_delay


def claim(subscription_id: str, limit: int, lease_seconds: float) -> tuple[str, list[str]]:
    """Up to ``limit`` of the subscription's due deliveries, oldest due first, under a fresh token."""
    now, token = utcnow(), uuid.uuid4().hex
    query = (
        WebhookDelivery.select(WebhookDelivery.id)
        .where(
            WebhookDelivery.subscription_id == subscription_id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if not query.exists():  # a read first: no write lock taken, several times a second, while nothing is due
        return token, []
    if isinstance(database.obj, PostgresqlDatabase):
        query = query.for_update("FOR UPDATE SKIP LOCKED")  # two dispatchers claim different rows
    with write_transaction(database.obj):
        ids = [row.id for row in query]
        if ids:
            WebhookDelivery.update(lease_token=token, next_attempt_at=now + timedelta(seconds=lease_seconds)).where(
                WebhookDelivery.id.in_(ids)
            ).execute()
    return token, ids


def leased(ids: list[str], token: str) -> list[tuple[str, str]]:
    """The (id, body) of ``ids`` still pending under ``token``, oldest event first."""
    query = (
        WebhookDelivery.select(WebhookDelivery.id, WebhookDelivery.body)
        .where(WebhookDelivery.id.in_(ids), WebhookDelivery.lease_token == token, WebhookDelivery.status == PENDING)
        .order_by(WebhookDelivery.id)
    )
    return [(row.id, row.body) for row in query]


def _under(ids: list[str], token: str):
    return (WebhookDelivery.id.in_(ids), WebhookDelivery.lease_token == token, WebhookDelivery.status == PENDING)


def delivered(ids: list[str], token: str, status: int) -> int:
    """Every write here takes this process's turn first (``store.db.write_transaction``): on SQLite, writers
    left to SQLite's own busy waits sleep up to 100 ms a try, and the finishing threads fall behind."""
    changes = {"status": DELIVERED, "delivered_at": utcnow(), "last_status": status, "last_error": None}
    with write_transaction(database.obj):
        return WebhookDelivery.update(**changes, lease_token=None).where(*_under(ids, token)).execute()


def failed(
    ids: list[str], token: str, status: int | None, error: str, schedule: tuple[float, ...], at_least: float = 0.0
) -> Counter:
    """A request carrying ``ids`` failed: each is due again after its next delay (``at_least`` seconds, when
    the receiver asked for as much), or is a dead letter once its attempts are spent. Returns how many of
    each (``retry``, ``dead``)."""
    now, outcome = utcnow(), Counter()
    with write_transaction(database.obj):
        by_attempts: defaultdict[int, list[str]] = defaultdict(list)
        for row in WebhookDelivery.select(WebhookDelivery.id, WebhookDelivery.attempts).where(*_under(ids, token)):
            by_attempts[row.attempts + 1].append(row.id)
        for attempts, chosen in by_attempts.items():
            delay = next_delay(attempts, schedule)
            changes = {"attempts": attempts, "last_status": status, "last_error": error[:500], "lease_token": None}
            if delay is None:
                changes["status"] = FAILED
            else:
                changes["next_attempt_at"] = now + timedelta(seconds=max(delay, at_least))
            WebhookDelivery.update(**changes).where(WebhookDelivery.id.in_(chosen)).execute()
            outcome["dead" if delay is None else "retry"] += len(chosen)
    return outcome


def gone(subscription_id: str, ids: list[str], token: str, reason: str) -> None:
    """The receiver answered ``410 Gone``: the subscription is disabled and the request's deliveries are dead
    letters (its other pending ones wait until it is enabled again)."""
    with write_transaction(database.obj):
        subscriptions.disable(subscription_id, reason)
        WebhookDelivery.update(
            status=FAILED, attempts=WebhookDelivery.attempts + 1, last_status=410, last_error=reason, lease_token=None
        ).where(*_under(ids, token)).execute()


def give_back(ids: list[str], token: str, due_in: float = 0.0) -> int:
    """Due again in ``due_in`` seconds, no attempt counted (a request cancelled at shutdown, or one a full
    engine had no room for)."""
    due = utcnow() + timedelta(seconds=due_in)
    with write_transaction(database.obj):
        return WebhookDelivery.update(next_attempt_at=due, lease_token=None).where(*_under(ids, token)).execute()


def listing(status: str | None = None, subscription_id: str | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """The latest deliveries, newest first, optionally of one status and subscription."""
    query = WebhookDelivery.select(
        WebhookDelivery.id,
        WebhookDelivery.subscription_id,
        WebhookDelivery.event_type,
        WebhookDelivery.status,
        WebhookDelivery.attempts,
        WebhookDelivery.next_attempt_at,
        WebhookDelivery.created_at,
        WebhookDelivery.delivered_at,
        WebhookDelivery.last_status,
        WebhookDelivery.last_error,
    )
    if status:
        query = query.where(WebhookDelivery.status == status)
    if subscription_id:
        query = query.where(WebhookDelivery.subscription_id == subscription_id)
    return list(query.order_by(WebhookDelivery.id.desc()).limit(limit))


def replay(ids: list[str] | None = None, subscription_id: str | None = None) -> int:
    """Send dead letters again, from their first attempt: those of ``ids``, or every one (of a subscription)."""
    conditions = [WebhookDelivery.status == FAILED]
    if ids is not None:
        conditions.append(WebhookDelivery.id.in_(ids))
    if subscription_id:
        conditions.append(WebhookDelivery.subscription_id == subscription_id)
    return (
        WebhookDelivery.update(status=PENDING, attempts=0, next_attempt_at=utcnow(), lease_token=None)
        .where(*conditions)
        .execute()
    )


def purge(delivered_before: datetime) -> int:
    """Forget deliveries delivered before then (dead letters stay until replayed or their subscription goes)."""
    return (
        WebhookDelivery.delete()
        .where(WebhookDelivery.status == DELIVERED, WebhookDelivery.created_at < delivered_before)
        .execute()
    )


def counts() -> dict[str, int]:
    """Deliveries by status."""
    query = WebhookDelivery.select(WebhookDelivery.status, fn.COUNT(WebhookDelivery.id).alias("n")).group_by(
        WebhookDelivery.status
    )
    return {row.status: row.n for row in query}
