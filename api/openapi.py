"""The OpenAPI 3.1 document of the HTTP API (``GET /openapi.json``).

Schemas come from the same pydantic models that validate requests (built with the configured limits) and
that shape the answers (``api.models``), so the document cannot drift from what is enforced.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import models as api
from api import openapi_webhooks
from insights.incoming import batch_envelope, request_models
from settings import Settings
from store.models import STATUSES

REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "Unparseable JSON, or a bad query parameter (named in `parameter`)",
    "404": "No such conversation, subscription or route",
    "409": "The conversation id was accepted with another payload",
    "408": "The body did not arrive within BODY_TIMEOUT_SECONDS",
    "413": "Body over the size limit",
    "415": "Content-Type is not application/json",
    "422": "Schema violations, each in `fields`; a webhook URL refused (url_refused)",
    "401": "No API key, or not a valid one",
    "403": "The API key lacks the scope (ingest to POST, read to GET, admin for webhooks)",
    "429": "Over the inbound limit; see Retry-After",
    "503": "Not ready, or the database is not answering",
}


def ref(model: type[BaseModel] | str) -> dict[str, str]:
    return {"$ref": REF.format(model=model if isinstance(model, str) else model.__name__)}


def answer(model: type[BaseModel], description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref(model)}}}
    if headers:
        response["headers"] = headers
    return response


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(model)}}}


def errors(*statuses: str) -> dict[str, Any]:
    retry_after = {"Retry-After": {"description": "whole seconds to wait", "schema": {"type": "integer", "minimum": 1}}}
    return {s: answer(api.Error, ERRORS[s], retry_after if s == "429" else None) for s in statuses}


def page_size(settings: Settings) -> dict[str, Any]:
    """The ``limit`` parameter of a paged list."""
    limits = {"type": "integer", "minimum": 1, "maximum": settings.max_page_size, "default": settings.default_page_size}
    return query("limit", limits, "page size")


def query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
    "description": "for a body without conversation ids: repeated with the same body within 24 h, the same "
    "answer and ids; with another body, 409 idempotency_key_reused",
}


LANE = query(
    "lane",
    {"type": "string", "enum": ["realtime", "bulk"], "default": "realtime"},
    "realtime: analyzed within seconds; bulk: through xAI's Batch API, at half price, within hours",
)


def window_parameters() -> list[dict[str, Any]]:
    moment = {"type": "string", "format": "date-time"}
    return [
        query(
            "start_time",
            moment,
            "window start, inclusive, on the time the conversation occurred (no offset means UTC)",
            True,
        ),
        query("end_time", moment, "window end, exclusive; must be later than start_time", True),
    ]


def filter_parameters() -> list[dict[str, Any]]:
    return [
        query("min_confidence", {"type": "number", "minimum": 0, "maximum": 1}, "lowest confidence"),
        query(
            "sentiment",
            {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "label, by the configured thresholds",
        ),
    ]


def openapi_document(settings: Settings) -> dict[str, Any]:
    conversation = request_models(settings)
    envelope = batch_envelope(settings)
    responses = [
        api.Accepted,
        api.Error,
        api.ConversationStatus,
        api.ConversationPage,
        api.InsightsPage,
        api.BatchResults,
        api.Summary,
        api.Trends,
        api.Health,
        api.Ready,
    ]
    _, definitions = models_json_schema(
        [
            (conversation, "validation"),
            (envelope, "validation"),
            *((model, "serialization") for model in responses),
            *((model, "validation") for model in openapi_webhooks.MODELS),
        ],
        ref_template=REF,
    )
    schemas = definitions["$defs"]
    schemas[envelope.__name__]["properties"]["conversations"]["items"] = {
        "description": "a Conversation; each item is validated on its own, and one that is not gets the status invalid",
    }
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Conversation Insights",
            "version": "1",
            "description": "Push customer conversations, read the insights analyzed from them.",
        },
        "paths": {
            "/api/v1/conversations": {
                "post": {
                    "summary": "Accept one conversation for analysis",
                    "parameters": [IDEMPOTENCY_KEY, LANE],
                    "requestBody": json_body(conversation),
                    "responses": {
                        "202": answer(api.Accepted, "Committed as queued"),
                        **errors("400", "408", "409", "413", "415", "422", "429", "503"),
                    },
                },
                "get": {
                    "summary": "The operations view: conversations by status and failure reason, oldest first",
                    "parameters": [
                        query("status", {"type": "string", "enum": list(STATUSES)}, "only this status"),
                        query(
                            "reason",
                            {"type": "string", "minLength": 1, "maxLength": 200},
                            "a part of last_error, any case",
                        ),
                        query(
                            "start_time",
                            {"type": "string", "format": "date-time"},
                            "occurred at or after (default: any)",
                        ),
                        query("end_time", {"type": "string", "format": "date-time"}, "occurred before (default: any)"),
                        page_size(settings),
                        query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    ],
                    "responses": {"200": answer(api.ConversationPage, "A page"), **errors("400", "503")},
                },
            },
            "/api/v1/conversations/batch": {
                "post": {
                    "summary": f"Accept up to {settings.max_batch_items} conversations, each on its own",
                    "parameters": [IDEMPOTENCY_KEY, LANE],
                    "requestBody": json_body(envelope),
                    "responses": {
                        "200": answer(api.BatchResults, "A result per item, in order"),
                        **errors("400", "408", "409", "413", "415", "422", "429", "503"),
                    },
                }
            },
            "/api/v1/conversations/{conversation_id}": {
                "get": {
                    "summary": "Status of a conversation, with its insight once completed",
                    "parameters": [
                        {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}},
                        query(
                            "include",
                            {"type": "string", "enum": ["payload", "sent"]},
                            "payload: the messages and metadata too; sent: the text that goes to xAI (masked)",
                        ),
                    ],
                    "responses": {"200": answer(api.ConversationStatus, "Found"), **errors("400", "404", "503")},
                }
            },
            "/api/v1/insights": {
                "get": {
                    "summary": "Insights of the conversations that occurred in a window, oldest first",
                    "parameters": [
                        *window_parameters(),
                        page_size(settings),
                        *filter_parameters(),
                        query("cursor", {"type": "string"}, "next_cursor of the previous page"),
                    ],
                    "responses": {"200": answer(api.InsightsPage, "A page"), **errors("400", "503")},
                }
            },
            "/api/v1/insights/summary": {
                "get": {
                    "summary": "Aggregates of the conversations that occurred in a window",
                    "parameters": window_parameters(),
                    "responses": {"200": answer(api.Summary, "The summary"), **errors("400", "503")},
                }
            },
            "/api/v1/insights/trends": {
                "get": {
                    "summary": "Per hour or UTC day of a window: count, counts by sentiment, mean score, top clusters",
                    "parameters": [
                        *window_parameters(),
                        query(
                            "bucket",
                            {"type": "string", "enum": ["hour", "day"], "default": "day"},
                            f"bucket width; a window may span at most {settings.trends_max_buckets} buckets",
                        ),
                        query(
                            "cluster",
                            {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$", "maxLength": 48},
                            "only the insights that name this cluster",
                        ),
                        *filter_parameters(),
                    ],
                    "responses": {"200": answer(api.Trends, "Every bucket of the window"), **errors("400", "503")},
                }
            },
            **openapi_webhooks.paths(answer, json_body, errors),
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": answer(api.Health, "Alive")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: Redis, database, Grok key",
                    "responses": {"200": answer(api.Ready, "Ready"), **errors("503")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "webhooks": openapi_webhooks.outgoing(ref),
        "components": {"schemas": schemas},
    }
    if settings.api_key_scopes:
        protect(document)
    return document


def protect(document: dict[str, Any]) -> None:
    """Declare the API keys the service requires on its ``/api/`` operations (see ``access``)."""
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, operations in document["paths"].items():
        if path.startswith("/api/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation["responses"].update(errors("401", "403"))
