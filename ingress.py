"""Ingress: the Falcon ASGI app (``uvicorn ingress:app``).

It validates conversations, applies the inbound limit shared through Redis, commits each accepted
conversation as ``queued`` before answering ``202``, and hands it to the workers with a Dramatiq message.
It never calls the LLM. It also answers status, insights queries and health checks. Every error is JSON
(``http_errors``); start-up, metrics and API keys are middleware (``middleware``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from collections import Counter
from datetime import datetime
from typing import Any

import falcon
import falcon.asgi
import peewee
import redis.asyncio
from limits import RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from pydantic import BaseModel, ValidationError
from ulid import ULID

import metrics
from actors.batching import collect
from actors.state import read_state
from insights import api_models as api
from insights.outbound import MISCONFIGURED_KEY
from insights.schemas import ConversationBase, batch_envelope, request_models
from openapi import openapi_document
from settings import Settings, settings_or_exit
from store import queries
from store.counts import SENTIMENTS, Filters
from http_errors import ApiError, bad_parameter, field_errors, handle_database_down, handle_unexpected, serialize_error
from middleware import ApiKeyAuth, Lifespan, RequestMetrics
from store.documents import insight_document, isoformat, status_document
from store.group_commit import GroupCommitter

logger = logging.getLogger("ingress")
INSIGHT_PARAMETERS = {"start_time", "end_time", "limit", "min_confidence", "sentiment", "cursor"}
READY_TIMEOUT_SECONDS = 2.0


class InboundLimiter:
    """``INBOUND_RPS`` conversations per second, shared by every web process through Redis.

    A moving window: at most ``INBOUND_RPS`` acceptances in any one-second span, which is the guarantee a
    token bucket of that rate and capacity approximates, held exactly. When Redis is unreachable the
    limiter lets requests through (the database, not Redis, is what must accept them) and logs it.
    """

    KEY = "inbound-conversations"
    WARN_EVERY_SECONDS = 10.0  # while Redis is away, say so now and then, not on every request

    def __init__(self, settings: Settings) -> None:
        self.item = RateLimitItemPerSecond(settings.inbound_rps)
        self.limiter = MovingWindowRateLimiter(storage_from_string(settings.limits_storage_url, implementation="redispy"))
        self.warned_at = -self.WARN_EVERY_SECONDS

    async def take(self, wanted: int = 1) -> tuple[int, int]:
        """Take up to ``wanted`` slots; return how many were granted and, when fewer, the whole seconds
        to wait for more (at least 1; 0 when all were granted)."""
        try:
            granted = wanted if await self._hit(wanted) else 0
            if granted < wanted:
                stats = await self.limiter.get_window_stats(self.item, self.KEY)
                if wanted > 1 and 0 < stats.remaining < wanted and await self._hit(stats.remaining):
                    granted = stats.remaining
                return granted, max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as error:  # Redis away: keep accepting into the database
            if time.monotonic() - self.warned_at >= self.WARN_EVERY_SECONDS:
                self.warned_at = time.monotonic()
                logger.warning("inbound limiter unavailable, accepting without it: %s", error)
        return wanted, 0

    async def _hit(self, cost: int) -> bool:
        return await self.limiter.hit(self.item, self.KEY, cost=cost)


async def read_body(req: falcon.Request, limit: int) -> bytes:
    """The request body, refused with ``413`` beyond ``limit`` bytes, never buffering more than that."""
    too_large = ApiError(
        falcon.HTTP_413, "payload_too_large", f"The request body exceeds {limit} bytes.", max_body_bytes=limit
    )
    if req.content_length is not None and req.content_length > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in req.stream:
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def admit(conversations: list[queries.NewConversation]) -> list[queries.InsertOutcome]:
    """Commit a round of conversations, then hand the new ones to the workers (in the writer thread).

    The commit is what a ``202`` promises; if Redis is away the send fails and the reconciler re-sends.
    """
    outcomes = queries.insert_conversations(conversations)
    created = [new.id for new, outcome in zip(conversations, outcomes) if outcome is queries.InsertOutcome.CREATED]
    for position, conversation_id in enumerate(created):
        try:
            collect.send(conversation_id)
        except Exception as error:
            logger.warning("could not enqueue %d conversation(s), the reconciler will: %s", len(created) - position, error)
            break
    return outcomes


class Admission:
    """What every accepted conversation goes through: the inbound limit, then the group commit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limiter = InboundLimiter(settings)
        self.committer = GroupCommitter(admit)

    def rate_limited(self, retry_after: int) -> ApiError:
        metrics.web().rate_limited.inc()
        return ApiError(
            falcon.HTTP_429, "rate_limited", f"Over {self.settings.inbound_rps} conversations a second; retry later.",
            headers={"Retry-After": str(retry_after)}, retry_after_seconds=retry_after,
        )

    async def commit(self, conversation: ConversationBase) -> tuple[str, queries.InsertOutcome]:
        """Commit one validated conversation (its slot already taken); return its id and the outcome."""
        new = queries.NewConversation.of(conversation.conversation_id or f"conv_{ULID()}", conversation.canonical_payload(), queries.utcnow())
        outcome = await self.committer.submit(new)
        if outcome is queries.InsertOutcome.CREATED:
            metrics.web().accepted.inc()
        return new.id, outcome


def require_json(req: falcon.Request) -> None:
    if not req.content_type or falcon.MEDIA_JSON not in req.content_type.split(";")[0].strip().lower():
        raise ApiError(falcon.HTTP_415, "unsupported_media_type", "Send the body as application/json.")


class ConversationsResource:
    """``POST /api/v1/conversations``: validate, limit, commit as ``queued``, enqueue, ``202``."""

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        conversation = self.parse(await read_body(req, self.settings.max_body_bytes))
        granted, retry_after = await self.admission.limiter.take()
        if not granted:
            raise self.admission.rate_limited(retry_after)
        conversation_id, outcome = await self.admission.commit(conversation)
        if outcome is queries.InsertOutcome.CONFLICT:
            raise ApiError(
                falcon.HTTP_409, "conflict",
                f"Conversation {conversation_id} was already accepted with a different payload.",
                conversation_id=conversation_id,
            )
        resp.status = falcon.HTTP_202
        resp.location = f"/api/v1/conversations/{conversation_id}"
        resp.media = api.dump(api.Accepted(conversation_id=conversation_id))

    def parse(self, body: bytes) -> ConversationBase:
        return parse_json(self.model, body, "The conversation does not match the schema.")


def parse_json(model: type[BaseModel], body: bytes, mismatch: str) -> Any:
    """``body`` validated by ``model``; ``400`` when it is not JSON, ``422`` listing every bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        if any(detail["type"] == "json_invalid" for detail in error.errors()):
            raise ApiError(falcon.HTTP_400, "invalid_json", f"The body is not valid JSON: {error.errors()[0]['msg']}.")
        raise ApiError(falcon.HTTP_422, "validation_failed", mismatch, fields=field_errors(error))


OUTCOME_STATUS = {
    queries.InsertOutcome.CREATED: "accepted",
    queries.InsertOutcome.DUPLICATE: "duplicate",
    queries.InsertOutcome.CONFLICT: "conflict",
}


class BatchResource:
    """``POST /api/v1/conversations/batch``: up to ``MAX_BATCH_ITEMS`` conversations, each on its own.

    Every item is validated, limited and committed independently and gets its own result: ``accepted``,
    ``duplicate``, ``conflict``, ``invalid`` (with its ``errors``) or ``rate_limited`` (with a
    ``Retry-After`` header on the answer). Each counts against the inbound limit; when the limit leaves
    room for none, the answer is ``429``.
    """

    def __init__(self, settings: Settings, admission: Admission) -> None:
        self.settings = settings
        self.model = request_models(settings)
        self.envelope = batch_envelope(settings)
        self.admission = admission

    async def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json(req)
        body = await read_body(req, self.settings.max_batch_body_bytes)
        items = parse_json(self.envelope, body, "The body must be {\"conversations\": [...]}.").conversations
        results: list[api.BatchItemResult | None] = [None] * len(items)
        valid = []
        for index, item in enumerate(items):
            try:
                valid.append((index, self.model.model_validate(item)))
            except ValidationError as error:
                results[index] = api.BatchItemResult(index=index, status="invalid", errors=field_errors(error))
        granted, retry_after = await self.admission.limiter.take(len(valid)) if valid else (0, 0)
        if valid and not granted:
            raise self.admission.rate_limited(retry_after)
        committed = await asyncio.gather(*(self.admission.commit(c) for _index, c in valid[:granted]))
        for (index, _c), (conversation_id, outcome) in zip(valid, committed):
            results[index] = api.BatchItemResult(index=index, status=OUTCOME_STATUS[outcome], conversation_id=conversation_id)
        for index, _c in valid[granted:]:
            results[index] = api.BatchItemResult(index=index, status="rate_limited")
        metrics.web().rate_limited.inc(len(valid) - granted)
        if granted < len(valid):
            resp.set_header("Retry-After", str(retry_after))
        summary = Counter(result.status for result in results)
        resp.media = api.BatchResults(results=results, summary=summary).model_dump(mode="json", exclude_none=True)



class ConversationResource:
    """``GET /api/v1/conversations/{id}``: status, attempts, last error and, once done, the insight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response, conversation_id: str) -> None:
        found = await asyncio.to_thread(queries.get_conversation, conversation_id)
        if found is None:
            raise ApiError(falcon.HTTP_404, "not_found", f"No conversation {conversation_id}.")
        resp.media = api.dump(status_document(*found, self.settings))


def parse_time(req: falcon.Request, name: str) -> datetime:
    raw = req.get_param(name)
    if raw is None:
        raise bad_parameter(name, "required (ISO-8601, e.g. 2026-01-31T00:00:00Z)")
    try:
        return queries.parse_db_time(raw)
    except ValueError as error:
        raise bad_parameter(name, str(error)) from None


def parse_number(req: falcon.Request, name: str, kind: type, low: float, high: float, default: Any) -> Any:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise bad_parameter(name, f"not a {'whole ' if kind is int else ''}number: {raw!r}") from None
    if not (low <= value <= high):  # also refuses NaN
        raise bad_parameter(name, f"must be between {low} and {high}, got {raw}")
    return value


def parse_window(req: falcon.Request, allowed: set[str]) -> tuple[datetime, datetime]:
    """Refuse unknown and repeated parameters; return the required ``[start_time, end_time)``."""
    unknown = sorted(set(req.params) - allowed)
    if unknown:
        raise bad_parameter(unknown[0], f"unknown parameter; expected some of {sorted(allowed)}")
    for name, value in req.params.items():
        if isinstance(value, list):
            raise bad_parameter(name, "given more than once")
    start, end = parse_time(req, "start_time"), parse_time(req, "end_time")
    if end <= start:
        raise bad_parameter("end_time", "must be later than start_time")
    return start, end


def encode_cursor(after: tuple[datetime, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([after[0].isoformat(), after[1]]).encode()).decode()


def decode_cursor(raw: str) -> tuple[datetime, str]:
    try:
        moment, conversation_id = json.loads(base64.urlsafe_b64decode(raw.encode()))
        return datetime.fromisoformat(moment), str(conversation_id)
    except (ValueError, TypeError, binascii.Error, UnicodeError):
        raise bad_parameter("cursor", "not a cursor this API returned") from None


class InsightsResource:
    """``GET /api/v1/insights``: insights of the conversations received in ``[start_time, end_time)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = self.parse_query(req)
        page = await asyncio.to_thread(queries.query_insights, query)
        resp.media = api.dump(api.InsightsPage(
            insights=[insight_document(insight, self.settings) for insight in page.insights],
            metadata=api.PageMetadata(
                total_count=page.total_count,
                returned_count=len(page.insights),
                time_window=api.TimeWindow(start_time=isoformat(query.start), end_time=isoformat(query.end)),
                next_cursor=encode_cursor(page.next_after) if page.next_after else None,
            ),
        ))

    def parse_query(self, req: falcon.Request) -> queries.InsightQuery:
        start, end = parse_window(req, INSIGHT_PARAMETERS)
        sentiment = req.get_param("sentiment")
        if sentiment is not None and sentiment not in SENTIMENTS:
            raise bad_parameter("sentiment", f"one of {', '.join(SENTIMENTS)}, got {sentiment!r}")
        cursor = req.get_param("cursor")
        return queries.InsightQuery(
            start=start,
            end=end,
            limit=parse_number(req, "limit", int, 1, self.settings.max_page_size, self.settings.default_page_size),
            filters=Filters(
                sentiment=sentiment,
                thresholds=(self.settings.negative_threshold, self.settings.positive_threshold),
                min_confidence=parse_number(req, "min_confidence", float, 0.0, 1.0, None),
            ),
            after=decode_cursor(cursor) if cursor is not None else None,
        )


class SummaryResource:
    """``GET /api/v1/insights/summary``: aggregates of the conversations received in the window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        start, end = parse_window(req, {"start_time", "end_time"})
        thresholds = (self.settings.negative_threshold, self.settings.positive_threshold)
        summary = await asyncio.to_thread(queries.summarize, start, end, thresholds, self.settings.summary_top)
        resp.media = api.dump(api.Summary(
            time_window=api.TimeWindow(start_time=isoformat(start), end_time=isoformat(end)),
            sentiment=api.SentimentSummary(counts=summary.by_sentiment, mean_score=summary.mean_sentiment),
            top_clusters=[api.ClusterCount(cluster=name, count=n) for name, n in summary.top_clusters],
            conversations_by_status=summary.by_status,
            top_failure_reasons=[api.FailureCount(reason=reason, count=n) for reason, n in summary.top_failures],
        ))


class HealthResource:
    """``GET /healthz``: the process answers; touches neither Redis nor the database."""

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = api.dump(api.Health(status="ok"))


class ReadinessResource:
    """``GET /readyz``: ``200`` when Redis and the database answer and Grok accepts our key.

    Else ``503`` naming what fails (``redis``, ``database``, ``grok``).
    """

    def __init__(self, settings: Settings) -> None:
        self.redis = redis.asyncio.Redis.from_url(settings.redis_url, socket_timeout=READY_TIMEOUT_SECONDS)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks = {"redis": self.redis.get(MISCONFIGURED_KEY), "database": asyncio.to_thread(queries.ping)}
        results = await asyncio.gather(
            *(asyncio.wait_for(check, READY_TIMEOUT_SECONDS) for check in checks.values()), return_exceptions=True
        )
        failing = {name: f"{type(r).__name__}: {r}" for name, r in zip(checks, results) if isinstance(r, BaseException)}
        if isinstance(results[0], bytes):  # a worker found Grok refusing our requests (bad key...)
            failing["grok"] = results[0].decode()
        if failing:
            raise ApiError(
                falcon.HTTP_503, "not_ready", f"Not answering: {', '.join(failing)}.", failing=failing
            )
        resp.media = api.dump(api.Ready(status="ready", checks={name: "ok" for name in (*checks, "grok")}))


class OpenApiResource:
    """``GET /openapi.json``: the OpenAPI 3.1 document, generated from the validating models."""

    def __init__(self, settings: Settings) -> None:
        self.document = openapi_document(settings)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


class MetricsResource:
    """``GET /metrics``: Prometheus exposition of the web processes (see ``metrics``)."""

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = await asyncio.to_thread(metrics.exposition, read_state)


def create_app(settings: Settings) -> falcon.asgi.App:
    app = falcon.asgi.App(middleware=[Lifespan(settings), RequestMetrics(), ApiKeyAuth(settings)])
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler((peewee.OperationalError, peewee.InterfaceError), handle_database_down)
    admission = Admission(settings)
    app.add_route("/api/v1/conversations", ConversationsResource(settings, admission))
    app.add_route("/api/v1/conversations/batch", BatchResource(settings, admission))
    app.add_route("/api/v1/conversations/{conversation_id}", ConversationResource(settings))
    app.add_route("/api/v1/insights", InsightsResource(settings))
    app.add_route("/api/v1/insights/summary", SummaryResource(settings))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadinessResource(settings))
    app.add_route("/openapi.json", OpenApiResource(settings))
    app.add_route("/metrics", MetricsResource())
    return app


app = create_app(settings_or_exit())
