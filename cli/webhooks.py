"""``insights webhooks add|list|remove|rotate|enable|deliveries|replay``: webhook subscriptions and their
delivery log.

``add`` checks the URL as the API does (``https``, public addresses, ``WEBHOOK_ALLOW_HOSTS`` exempt) and prints
the signing secret, once. ``deliveries --failed`` lists the dead letters; ``replay`` sends them again from
their first attempt.
"""

from __future__ import annotations

import json
from argparse import Namespace
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from api.webhooks import NewSubscription, batch_size_refused, document, register
from cli.command import always, argument, command
from cli.common import JSON, Refused, print_documents, sql_text, table_row
from settings import Settings
from store import deliveries, subscriptions
from store.webhook_models import DELIVERY_STATUSES, FAILED, WebhookDelivery
from webhooks import events, signing
from webhooks.addresses import RefusedUrl

SUBSCRIPTION_ID = argument("subscription_id", type=sql_text)


def unknown(subscription_id: str) -> Refused:
    return Refused(f"no webhook subscription {subscription_id} (insights webhooks list shows them)")


@command(
    "webhooks add",
    "register a receiver; prints its signing secret, once",
    argument("url"),
    argument("--events", default=",".join(events.EVENT_TYPES), help="comma-separated (default: all of them)"),
    argument("--batch-size", type=int, default=1, help="events one request may carry (default 1)"),
    writes=always,
)
def add(settings: Settings, args: Namespace) -> int:
    try:
        new = NewSubscription(url=args.url, events=args.events.split(","), batch_size=args.batch_size)
        if too_large := batch_size_refused(new, settings):
            raise Refused(f"--batch-size: {too_large}")
        subscription, secret = register(new, settings)
    except ValidationError as error:
        raise Refused(f"{error.errors()[0]['loc'][0]}: {error.errors()[0]['msg']}") from None
    except RefusedUrl as refused:
        raise Refused(f"{args.url}: {refused}") from None
    print(json.dumps({**document(subscription), "secret": secret}))
    return 0


@command("webhooks list", "the subscriptions (never their secrets)", JSON)
def list_subscriptions(_settings: Settings, args: Namespace) -> int:
    print_documents(
        [document(s) for s in subscriptions.all_subscriptions()],
        args.json,
        "id\turl\tevents\tbatch_size\tenabled",
        lambda d: table_row(d["id"], d["url"], ",".join(d["events"]), d["batch_size"], d["enabled"]),
    )
    return 0


@command("webhooks remove", "remove a subscription and its deliveries", SUBSCRIPTION_ID, writes=always)
def remove(_settings: Settings, args: Namespace) -> int:
    if not subscriptions.remove(args.subscription_id):
        raise unknown(args.subscription_id)
    print(f"removed {args.subscription_id}")
    return 0


@command(
    "webhooks rotate", "a new signing secret; the old one still signs for the overlap", SUBSCRIPTION_ID, writes=always
)
def rotate(settings: Settings, args: Namespace) -> int:
    secret, hours = signing.new_secret(), settings.webhook_rotation_overlap_hours
    if not subscriptions.rotate(args.subscription_id, secret, timedelta(hours=hours)):
        raise unknown(args.subscription_id)
    print(json.dumps({"id": args.subscription_id, "secret": secret, "previous_secret_signs_for_hours": hours}))
    return 0


@command("webhooks enable", "deliver again to one disabled by a 410 Gone", SUBSCRIPTION_ID, writes=always)
def enable(_settings: Settings, args: Namespace) -> int:
    if not subscriptions.enable(args.subscription_id):
        raise unknown(args.subscription_id)
    print(f"enabled {args.subscription_id}")
    return 0


def delivery_document(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "subscription_id": delivery.subscription_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": events.iso(delivery.created_at),
        "next_attempt_at": events.iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "delivered_at": events.iso(delivery.delivered_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
    }


@command(
    "webhooks deliveries",
    "the delivery log, newest first",
    argument("--failed", action="store_true", help="only the dead letters"),
    argument("--status", choices=DELIVERY_STATUSES, help="only those of this status"),
    argument("--subscription", type=sql_text, help="only those of this subscription"),
    argument("--limit", type=int, default=50, help="at most this many (default 50)"),
    JSON,
)
def list_deliveries(_settings: Settings, args: Namespace) -> int:
    status = FAILED if args.failed else args.status
    print_documents(
        [delivery_document(d) for d in deliveries.listing(status, args.subscription, args.limit)],
        args.json,
        "id\tsubscription\tevent\tstatus\tattempts\tlast_status\tlast_error",
        lambda d: table_row(
            d["id"],
            d["subscription_id"],
            d["event_type"],
            d["status"],
            d["attempts"],
            d["last_status"],
            d["last_error"],
        ),
    )
    return 0


@command(
    "webhooks replay",
    "send dead letters again, from their first attempt",
    argument("delivery_ids", nargs="*", type=sql_text, help="these (default: every dead letter)"),
    argument("--subscription", type=sql_text, help="only those of this subscription"),
    writes=always,
)
def replay(_settings: Settings, args: Namespace) -> int:
    replayed = deliveries.replay(args.delivery_ids or None, args.subscription)
    if args.delivery_ids and replayed < len(args.delivery_ids):
        missing = len(args.delivery_ids) - replayed
        raise Refused(f"{missing} of the ids are not dead letters (insights webhooks deliveries --failed lists them)")
    print(f"replayed {replayed} delivery(ies)")
    return 0
