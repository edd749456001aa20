"""Webhook subscriptions, for the ``admin`` scope: ``POST /api/v1/webhooks`` registers a receiver and answers
its signing secret, once; ``GET`` lists them; ``GET``/``DELETE /api/v1/webhooks/{id}`` shows or removes one;
``POST /api/v1/webhooks/{id}/rotate`` gives it a new secret, the old one still signing for
``WEBHOOK_ROTATION_OVERLAP_HOURS``. The CLI's ``insights webhooks`` registers through :func:`register` too.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Annotated, Any

import falcon
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import webhook_models as hooks
from api.body import parse_json, read_body, require_json
from api.errors import ApiError
from api.models import dump
from settings import Settings
from store import subscriptions
from store.db import call_and_release
from store.webhook_models import WebhookSubscription
from webhooks import events, signing
from webhooks.addresses import RefusedUrl, check_url


class NewSubscription(BaseModel):
    """What registering a receiver takes."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(min_length=1)]
    events: Annotated[list[str], Field(min_length=1)]
    batch_size: Annotated[int, Field(ge=1)] = 1

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(events.EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event(s) {', '.join(unknown)}; choose among {', '.join(events.EVENT_TYPES)}")
        return value


def batch_size_refused(new: NewSubscription, settings: Settings) -> str | None:
    """Why ``new`` asks for too large batches, if it does."""
    if new.batch_size > settings.webhook_max_batch:
        return f"batch_size may be at most {settings.webhook_max_batch} (WEBHOOK_MAX_BATCH)"
    return None


def register(new: NewSubscription, settings: Settings) -> tuple[WebhookSubscription, str]:
    """Check the receiver (``webhooks.addresses``: raises :class:`RefusedUrl`) and store the subscription with
    a fresh secret; return it and the secret. Resolves the URL's host: blocking."""
    check_url(new.url, settings.webhook_allowed_hosts)
    secret = signing.new_secret()
    return call_and_release(subscriptions.create, new.url, new.events, new.batch_size, secret), secret


def document(subscription: WebhookSubscription) -> dict[str, Any]:
    """A subscription as the API and the CLI show it: never its secret."""
    return dump(
        hooks.Subscription(
            id=subscription.id,
            url=subscription.url,
            events=json.loads(subscription.events),
            batch_size=subscription.batch_size,
            enabled=subscription.enabled,
            disabled_reason=subscription.disabled_reason,
            created_at=events.iso(subscription.created_at),
        )
    )


def not_found(subscription_id: str) -> ApiError:
    return ApiError(falcon.HTTP_404, "not_found", f"No webhook subscription {subscription_id}.")


class WebhooksResource:
    scope = "admin"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        body = await read_body(req, self.settings.max_body_bytes, self.settings.body_timeout_seconds)
        new = parse_json(NewSubscription, body, "The subscription does not match the schema.")
        if too_large := batch_size_refused(new, self.settings):
            fields = [{"path": "batch_size", "message": too_large}]
            raise ApiError(
                falcon.HTTP_422, "validation_failed", "The subscription does not match the schema.", fields=fields
            )
        try:
            subscription, secret = await asyncio.to_thread(register, new, self.settings)
        except RefusedUrl as refused:
            raise ApiError(falcon.HTTP_422, "url_refused", str(refused), url=new.url) from None
        resp.status = falcon.HTTP_201
        resp.location = f"/api/v1/webhooks/{subscription.id}"
        resp.media = dump(hooks.SubscriptionCreated(**document(subscription), secret=secret))

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        found = await asyncio.to_thread(call_and_release, subscriptions.all_subscriptions)
        resp.media = {"webhooks": [document(subscription) for subscription in found]}  # hooks.Subscriptions


class WebhookResource:
    scope = "admin"

    async def on_get(self, req: falcon.Request, resp: falcon.Response, subscription_id: str) -> None:
        subscription = await asyncio.to_thread(call_and_release, subscriptions.get, subscription_id)
        if subscription is None:
            raise not_found(subscription_id)
        resp.media = document(subscription)

    async def on_delete(self, req: falcon.Request, resp: falcon.Response, subscription_id: str) -> None:
        if not await asyncio.to_thread(call_and_release, subscriptions.remove, subscription_id):
            raise not_found(subscription_id)
        resp.status = falcon.HTTP_204


class RotationResource:
    scope = "admin"

    def __init__(self, settings: Settings) -> None:
        self.overlap = timedelta(hours=settings.webhook_rotation_overlap_hours)

    async def on_post(self, req: falcon.Request, resp: falcon.Response, subscription_id: str) -> None:
        secret = signing.new_secret()
        if not await asyncio.to_thread(call_and_release, subscriptions.rotate, subscription_id, secret, self.overlap):
            raise not_found(subscription_id)
        resp.media = {
            "id": subscription_id,
            "secret": secret,
            "previous_secret_signs_for_hours": self.overlap / timedelta(hours=1),
        }
