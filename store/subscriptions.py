"""Webhook subscriptions: made with a fresh secret, listed, removed, their secret rotated (the old one
still signs for an overlap), disabled when their receiver answers ``410 Gone``, enabled again by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from ulid import ULID

from store.db import write_transaction
from store.models import database
from store.queries import utcnow
from store.webhook_models import PENDING, WebhookDelivery, WebhookSubscription


def create(url: str, events: list[str], batch_size: int, secret: str) -> WebhookSubscription:
    subscription = WebhookSubscription(
        id=f"wh_{ULID()}",
        url=url,
        events=json.dumps(sorted(set(events))),
        secret=secret,
        batch_size=batch_size,
        created_at=utcnow(),
    )
    subscription.save(force_insert=True)
    return subscription


def all_subscriptions() -> list[WebhookSubscription]:
    return list(WebhookSubscription.select().order_by(WebhookSubscription.created_at, WebhookSubscription.id))


def get(subscription_id: str) -> WebhookSubscription | None:
    return WebhookSubscription.get_or_none(WebhookSubscription.id == subscription_id)


def remove(subscription_id: str) -> bool:
    """Remove a subscription and its deliveries (those still pending are never sent)."""
    with write_transaction(database.obj):
        WebhookDelivery.delete().where(WebhookDelivery.subscription_id == subscription_id).execute()
        return bool(WebhookSubscription.delete().where(WebhookSubscription.id == subscription_id).execute())


def rotate(subscription_id: str, secret: str, overlap: timedelta) -> bool:
    """Sign with ``secret`` from now on, and with the current one too for ``overlap``."""
    with write_transaction(database.obj):
        current = get(subscription_id)
        if current is None:
            return False
        WebhookSubscription.update(
            secret=secret, previous_secret=current.secret, previous_secret_until=utcnow() + overlap
        ).where(WebhookSubscription.id == subscription_id).execute()
        return True


def signing_secrets(subscription: WebhookSubscription, now: datetime) -> list[str]:
    """The secrets a request is signed with now: the current one, and the previous within its overlap."""
    until = subscription.previous_secret_until
    if subscription.previous_secret and until is not None and until > now:
        return [subscription.secret, subscription.previous_secret]
    return [subscription.secret]


def disable(subscription_id: str, reason: str) -> None:
    WebhookSubscription.update(enabled=False, disabled_reason=reason).where(
        WebhookSubscription.id == subscription_id
    ).execute()


def enable(subscription_id: str) -> bool:
    """Deliver to it again: its pending deliveries are due now."""
    with write_transaction(database.obj):
        found = (
            WebhookSubscription.update(enabled=True, disabled_reason=None)
            .where(WebhookSubscription.id == subscription_id)
            .execute()
        )
        WebhookDelivery.update(next_attempt_at=utcnow(), lease_token=None).where(
            WebhookDelivery.subscription_id == subscription_id, WebhookDelivery.status == PENDING
        ).execute()
    return bool(found)


def wanting(event_type: str) -> list[WebhookSubscription]:
    """The enabled subscriptions that want ``event_type`` (a small table, read whole)."""
    return [subscription for subscription in enabled() if event_type in json.loads(subscription.events)]


def enabled() -> list[WebhookSubscription]:
    return list(WebhookSubscription.select().where(WebhookSubscription.enabled == True))  # noqa: E712
