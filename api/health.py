"""Routes for operators and machines: liveness, readiness, the OpenAPI document, Prometheus metrics."""

from __future__ import annotations

import asyncio

import falcon
import redis.asyncio

import metrics
from actors.state import read_state
from api.errors import ApiError
from insights import api_models as api
from insights.outbound import MISCONFIGURED_KEY
from openapi import openapi_document
from settings import Settings
from store import queries

READY_TIMEOUT_SECONDS = 2.0


class HealthResource:
    """``GET /healthz``: the process answers; touches neither Redis nor the database."""

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = api.dump(api.Health(status="ok"))


class ReadinessResource:
    """``GET /readyz``: ``200`` when Redis and the database answer and Grok accepts our key.

    Else ``503`` naming what fails (``redis``, ``database``, ``grok``).
    """

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

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

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

    def __init__(self, settings: Settings) -> None:
        self.document = openapi_document(settings)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


class MetricsResource:
    """``GET /metrics``: Prometheus exposition of the web processes (see ``metrics``)."""

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data, resp.content_type = await asyncio.to_thread(metrics.exposition, read_state)
