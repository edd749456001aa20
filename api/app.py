"""The web process's app: :func:`create_app` wires the resources, middleware and error handlers together
for the settings it is given (``ingress.app`` is what uvicorn serves). It builds no connection: the app's
start-up (``api.middleware.Lifespan``) sets up the broker and opens the database."""

from __future__ import annotations

import falcon
import falcon.asgi
import peewee

from api.admission import Admission
from api.batch import BatchResource
from api.conversations import ConversationResource, ConversationsResource
from api.errors import handle_database_down, handle_unexpected, serialize_error
from api.health import (
    HealthResource,
    MetricsResource,
    OpenApiResource,
    ReadinessResource,
)
from api.insights import InsightsResource, SummaryResource
from api.middleware import ApiKeyAuth, Lifespan, RequestMetrics
from api.trends import TrendsResource
from api.webhooks import RotationResource, WebhookResource, WebhooksResource
from settings import Settings


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
    app.add_route("/api/v1/insights/trends", TrendsResource(settings))
    app.add_route("/api/v1/webhooks", WebhooksResource(settings))
    app.add_route("/api/v1/webhooks/{subscription_id}", WebhookResource())
    app.add_route("/api/v1/webhooks/{subscription_id}/rotate", RotationResource(settings))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadinessResource())
    app.add_route("/openapi.json", OpenApiResource(settings))
    app.add_route("/metrics", MetricsResource())
    return app
