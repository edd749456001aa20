"""The API's one error shape: ``{"error": {"code": ..., "message": ..., ...details}}``, whatever failed."""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
from pydantic import ValidationError

logger = logging.getLogger("ingress")


class ApiError(falcon.HTTPError):
    """An HTTP error with a machine-readable ``code`` and optional extra fields in its JSON body."""

    def __init__(self, status: str, code: str, message: str, headers: dict[str, str] | None = None, **details: Any):
        super().__init__(status, title=message, code=code, headers=headers)
        self.details = details


DEFAULT_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    400: "bad_request",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error body has the same JSON shape, whatever raised it."""
    fallback_messages = {
        404: f"No resource at {req.path}.",
        405: f"{req.method} is not allowed on {req.path}.",
    }
    body: dict[str, Any] = {
        "code": error.code or DEFAULT_CODES.get(error.status_code, "error"),
        "message": error.description or fallback_messages.get(error.status_code, error.title),
    }
    body.update(getattr(error, "details", {}))
    resp.content_type = falcon.MEDIA_JSON
    resp.text = json.dumps({"error": body})


async def handle_unexpected(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict) -> None:
    logger.exception("unhandled error on %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    serialize_error(req, resp, ApiError(falcon.HTTP_500, "internal_error", "The server failed to handle this request."))


async def handle_database_down(req: falcon.Request, resp: falcon.Response, error: Exception, params: dict) -> None:
    logger.error("database unavailable on %s %s: %s", req.method, req.path, error)
    resp.status = falcon.HTTP_503
    resp.retry_after = 1
    serialize_error(
        req, resp, ApiError(falcon.HTTP_503, "database_unavailable", "The database is not answering; retry shortly.")
    )


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"path": ".".join(str(part) for part in detail["loc"]) or "(body)", "message": detail["msg"]}
        for detail in error.errors()
    ]


def bad_parameter(name: str, message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_parameter", f"{name}: {message}", parameter=name)
