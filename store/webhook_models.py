"""The webhooks' tables: subscriptions, and the outbox of deliveries (one row per event and subscription).

Apart from ``store.models`` only for length; the same base model and database.
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, IntegerField, TextField

from store.models import BaseModel

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"  # a delivery's life; failed: a dead letter
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)


class WebhookSubscription(BaseModel):
    """A receiver's URL, the events it wants and the secret its requests are signed with."""

    id = CharField(max_length=40, primary_key=True)  # wh_ and a ULID
    url = TextField()
    events = TextField()  # JSON list of event types (webhooks.events)
    secret = CharField(max_length=128)  # whsec_...: shown once, when made or rotated
    previous_secret = CharField(max_length=128, null=True)  # still signs, beside the new one, until:
    previous_secret_until = DateTimeField(null=True)
    batch_size = IntegerField(default=1)  # events a request may carry
    enabled = BooleanField(default=True)  # off once its receiver answered 410 Gone
    disabled_reason = TextField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "webhook_subscriptions"


class WebhookDelivery(BaseModel):
    """One event for one subscription, written in the transaction of the change it reports (the outbox)."""

    id = CharField(max_length=40, primary_key=True)  # the event's id, msg_ and a ULID (webhook-id)
    subscription_id = CharField(max_length=40)
    event_type = CharField(max_length=40)
    body = TextField()  # the event as sent (webhooks.events.event)
    status = CharField(max_length=16, default=PENDING)
    attempts = IntegerField(default=0)  # requests that failed
    # When it is next due; while a request carries it, the end of that request's lease: a delivery whose
    # worker died is due again then (at least once).
    next_attempt_at = DateTimeField()
    lease_token = CharField(max_length=32, null=True)  # the request's that carries it now
    created_at = DateTimeField()
    delivered_at = DateTimeField(null=True)
    last_status = IntegerField(null=True)  # the receiver's last HTTP status (none: no answer)
    last_error = TextField(null=True)

    class Meta:
        table_name = "webhook_deliveries"
        indexes = (
            (("subscription_id", "status", "next_attempt_at"), False),  # the dispatcher's claims
            (("status", "created_at"), False),  # the delivery log, the dead letters, the purge
        )
