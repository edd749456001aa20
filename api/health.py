"""Routes for operators and machines: liveness, readiness, the OpenAPI document, Prometheus metrics."""

from __future__ import annotations

import asyncio
import dataclasses

import falcon

from actors.broker import gate
from actors.state import read_state
from api import models as api
from api.errors import ApiError
from api.openapi import openapi_document
from settings import Settings
from store import queries
from store.db import call_and_release
from telemetry import metrics

READY_TIMEOUT_SECONDS = 2.0


class HealthResource:
    """``GET /healthz``: the process answers; touches neither Redis nor the database."""

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = api.dump(api.Health(status="ok"))


class ReadinessResource:
    """``GET /readyz``: can this web process do its job, which is to accept conversations durably?

    ``200`` while the database answers; Redis down makes it ``degraded`` (ingress keeps accepting into the
    database, the reconciler hands the work on once Redis is back), never ``503``. Grok's state
    (available, paused or misconfigured, why, for how long) is reported in the body: it is the workers'
    concern, and a load balancer must not stop sending conversations to a healthy ingress because of it.
    ``503`` only when the database does not answer.
    """

    public = True  # no API key needed (see api.middleware.ApiKeyAuth)

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        database, grok = await asyncio.gather(
            asyncio.wait_for(asyncio.to_thread(call_and_release, queries.ping), READY_TIMEOUT_SECONDS),
            asyncio.wait_for(asyncio.to_thread(lambda: gate().state()), READY_TIMEOUT_SECONDS),
            return_exceptions=True,
        )
        checks = {"database": outcome(database), "redis": outcome(grok)}
        if isinstance(database, BaseException):
            raise ApiError(falcon.HTTP_503, "not_ready", "The database is not answering.", checks=checks)
        resp.media = api.dump(
            api.Ready(
                status="degraded" if isinstance(grok, BaseException) else "ready",
                checks=checks,
                grok=None if isinstance(grok, BaseException) else api.GrokStatus(**dataclasses.asdict(grok)),
            )
        )


def outcome(result: object) -> str:
    """``ok``, or what went wrong."""
    return f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else "ok"


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
        resp.data, resp.content_type = await asyncio.to_thread(call_and_release, metrics.exposition, read_state)
