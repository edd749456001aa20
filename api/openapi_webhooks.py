"""The webhooks' part of the OpenAPI document: the subscription routes (``api.webhooks``), and under OpenAPI
3.1's ``webhooks`` the requests a receiver is sent, with their Standard Webhooks headers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from api import webhook_models as hooks
from api.webhooks import NewSubscription

MODELS: list[type[BaseModel]] = [
    NewSubscription,
    hooks.Subscription,
    hooks.SubscriptionCreated,
    hooks.Subscriptions,
    hooks.Rotated,
    hooks.ConversationEvent,
    hooks.BatchEndedEvent,
    hooks.EventBatch,
]
HEADERS = {
    "webhook-id": "the event's id (a batch's: msg_batch_ and a digest of its events' ids)",
    "webhook-timestamp": "seconds since the epoch, when this attempt was signed",
    "webhook-signature": "v1, and base64 HMAC-SHA256 of id.timestamp.body; during a rotation, two, space-separated",
}
ADMIN = "The admin scope (when API keys are configured)."


def paths(answer: Callable[..., dict], json_body: Callable[..., dict], errors: Callable[..., dict]) -> dict[str, Any]:
    """The subscription routes, built with the main document's helpers (``api.openapi``)."""
    subscription_id = {"name": "subscription_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/webhooks": {
            "post": {
                "summary": "Register a receiver (https, public addresses only) for some events; its secret, once",
                "description": ADMIN,
                "requestBody": json_body(NewSubscription),
                "responses": {
                    "201": answer(hooks.SubscriptionCreated, "Registered"),
                    **errors("400", "413", "415", "422", "503"),
                },
            },
            "get": {
                "summary": "The subscriptions, without their secrets",
                "description": ADMIN,
                "responses": {"200": answer(hooks.Subscriptions, "Every subscription"), **errors("503")},
            },
        },
        "/api/v1/webhooks/{subscription_id}": {
            "get": {
                "summary": "One subscription",
                "parameters": [subscription_id],
                "responses": {"200": answer(hooks.Subscription, "Found"), **errors("404", "503")},
            },
            "delete": {
                "summary": "Remove a subscription and its deliveries",
                "parameters": [subscription_id],
                "responses": {"204": {"description": "Removed"}, **errors("404", "503")},
            },
        },
        "/api/v1/webhooks/{subscription_id}/rotate": {
            "post": {
                "summary": "A new signing secret; the old one signs too for WEBHOOK_ROTATION_OVERLAP_HOURS",
                "parameters": [subscription_id],
                "responses": {"200": answer(hooks.Rotated, "The new secret, once"), **errors("404", "503")},
            },
        },
    }


def outgoing(ref: Callable[[type[BaseModel]], dict]) -> dict[str, Any]:
    """What each event's request to a receiver carries (OpenAPI 3.1 ``webhooks``)."""
    headers = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": description}
        for name, description in HEADERS.items()
    ]
    received = {
        "2XX": {"description": "Delivered"},
        "410": {"description": "Gone: the subscription is disabled"},
        "429": {"description": "Too Many Requests: nothing more to the subscription until its Retry-After"},
        "default": {"description": "Tried again on the retry schedule, then a dead letter"},
    }

    def event(summary: str, model: type[BaseModel]) -> dict[str, Any]:
        body = {"required": True, "content": {"application/json": {"schema": ref(model)}}}
        return {"post": {"summary": summary, "parameters": headers, "requestBody": body, "responses": received}}

    return {
        "conversation.completed": event("A conversation was analyzed: its insight", hooks.ConversationEvent),
        "conversation.failed": event("A conversation failed for good: why", hooks.ConversationEvent),
        "provider_batch.ended": event("A provider batch of the bulk lane ended", hooks.BatchEndedEvent),
        "batch": event("Several events in one request (a subscription with batch_size > 1)", hooks.EventBatch),
    }
