"""Falcon middleware of the web process: start-up, request metrics, API keys."""

from __future__ import annotations

import asyncio
import logging
import time

import falcon

from actors import broker
from api import access
from api.errors import ApiError
from settings import Settings
from store.db import call_and_release, describe, open_database
from store.migrations import migrate
from telemetry import metrics
from telemetry.logs import configure_logging

logger = logging.getLogger("ingress")


class ApiKeyAuth:
    """Requires an API key with the right scope, when keys are configured: ``ingest`` to POST, ``read``
    for anything else, or the scope a resource names (``scope = "admin"``: webhook subscriptions). Health,
    readiness, metrics and the OpenAPI document are resources marked
    ``public = True``; every other resource is protected. The key comes as ``Authorization: Bearer <key>``
    or ``X-API-Key: <key>``.

    The check runs after routing, on the resource that will serve the request (``process_resource``),
    never on the spelling of the path: ``//api/v1/insights`` reaches the same resource, and the same check.
    """

    def __init__(self, settings: Settings) -> None:
        self.keys = settings.api_key_scopes

    async def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict
    ) -> None:
        if not self.keys or getattr(resource, "public", False):
            return
        scope = getattr(resource, "scope", None) or ("ingest" if req.method == "POST" else "read")
        verdict = access.authorize(presented_key(req), scope, self.keys)
        if verdict is access.Verdict.UNAUTHORIZED:
            raise ApiError(
                falcon.HTTP_401,
                "unauthorized",
                "A valid API key is required (Authorization: Bearer <key>).",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if verdict is access.Verdict.FORBIDDEN:
            raise ApiError(falcon.HTTP_403, "forbidden", f"This API key lacks the {scope!r} scope.", scope=scope)


def presented_key(req: falcon.Request) -> str | None:
    authorization = req.get_header("Authorization") or ""
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return req.get_header("X-API-Key")


class RequestMetrics:
    """Counts every answer by route template, method and status, and times it."""

    async def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    async def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, req_succeeded: bool
    ) -> None:
        route = req.uri_template or "(unmatched)"
        recorded = metrics.web()
        recorded.requests.labels(route, req.method, str(resp.status_code)).inc()
        recorded.latency.labels(route).observe(time.perf_counter() - req.context.started)


class Lifespan:
    """Sets up the broker (through which conversations are sent to the workers), opens and migrates the
    database when the server starts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def process_startup(self, scope: dict, event: dict) -> None:
        configure_logging(self.settings)
        broker.setup(self.settings)
        db = open_database(self.settings)
        applied = await asyncio.to_thread(call_and_release, migrate, db)
        logger.info("ingress ready: %s, migrations applied now: %s", describe(self.settings), applied or "none")
        if not self.settings.api_key_scopes:
            logger.warning("NO API KEYS CONFIGURED: the API is open to anyone who can reach it (set API_KEYS)")
