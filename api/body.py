"""Reading and parsing request bodies: size limits, content type, JSON validated by a pydantic model."""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
from pydantic import BaseModel, ValidationError

from api.errors import ApiError, field_errors


async def read_body(req: falcon.Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with ``413`` beyond ``limit`` bytes (never buffering more than that) and
    with ``408`` when it has not all arrived within ``timeout`` seconds (a slow sender holds no slot)."""
    too_large = ApiError(
        falcon.HTTP_413, "payload_too_large", f"The request body exceeds {limit} bytes.", max_body_bytes=limit
    )
    if req.content_length is not None and req.content_length > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in req.stream:
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            falcon.HTTP_408,
            "request_timeout",
            f"The request body did not arrive within {timeout:g} s.",
            headers={"Connection": "close"},
            body_timeout_seconds=timeout,
        ) from None
    return b"".join(chunks)


def require_json(req: falcon.Request) -> None:
    if not req.content_type or falcon.MEDIA_JSON not in req.content_type.split(";")[0].strip().lower():
        raise ApiError(falcon.HTTP_415, "unsupported_media_type", "Send the body as application/json.")


def parse_json(model: type[BaseModel], body: bytes, mismatch: str) -> Any:
    """``body`` validated by ``model``; ``400`` when it is not JSON, ``422`` listing every bad field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        if any(detail["type"] == "json_invalid" for detail in error.errors()):
            raise ApiError(
                falcon.HTTP_400, "invalid_json", f"The body is not valid JSON: {error.errors()[0]['msg']}."
            ) from None
        raise ApiError(falcon.HTTP_422, "validation_failed", mismatch, fields=field_errors(error)) from None
