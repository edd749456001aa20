"""Reading xAI's refusals: when to come back (``Retry-After``), what the body says (never the key),
whether a refusal is about what the request contains, and whether it says the team's credits are spent.

Shared by the real-time client (``insights.grok``) and the Batch API client (``insights.batch_api``);
``response`` is either library's (``httpx`` or ``requests``): both have ``.text``.
"""

from __future__ import annotations

import email.utils
import json
import re
from datetime import UTC, datetime
from typing import Protocol

from insights.schemas import storable
from settings.secrets import redact

# xAI's words for a team out of prepaid credits or over its monthly spending limit (docs/xai-today.md, 6).
CREDITS_WORDING = re.compile(r"\bcredits?\b|spending limit", re.IGNORECASE)
CONTENT_REFUSALS = (
    "violates",
    "usage guidelines",
    "safety",
    "content polic",
    "prompt length",
    "context length",
    "too long",
    "too large",
)


class HasText(Protocol):
    text: str


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def refused_for_content(status: int, detail: str) -> bool:
    """Is this refusal about what the request contains (one conversation's fault), not about us?

    xAI answers an over-long prompt with ``400`` ("maximum prompt length is ... but the request contains
    ... tokens"), content it will not process with ``403`` ("Content violates usage guidelines"); but it
    also answers an incorrect API key with ``400`` and a key without permission with ``403``
    (https://docs.x.ai/developers/debugging). ``413`` and ``422`` are always about the request."""
    text = detail.lower()
    if status in (413, 422):
        return True
    if status == 400:
        return "api key" not in text
    return status == 403 and any(marker in text for marker in CONTENT_REFUSALS)


def refusal_message(text: str) -> str:
    """The message of an error body, whatever its shape: a bare JSON string, ``{"error": ...}``,
    ``{"code": ..., "error": ...}``, ``{"error": {"message": ...}}``; the text itself when it is none of them."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    for key in ("error", "message"):
        if isinstance(document, dict):
            document = document.get(key, document)
    return document if isinstance(document, str) else text


def credits_exhausted(status: int, text: str) -> bool:
    """Does this refusal say that the team's credits are used up or its spending limit reached?

    xAI does not document it; it has been seen as ``429`` and later as ``403``, as a bare string and as
    ``{"code", "error"}`` (docs/xai-today.md, section 6), so it is told by its words, at any error status."""
    return status >= 400 and bool(CREDITS_WORDING.search(refusal_message(text)))


def error_detail(response: HasText, key: str, message_only: bool = False) -> str:
    """A short excerpt of an error body (``message_only``: of its message, :func:`refusal_message`) for
    ``last_error`` and logs, with the key (or a prefix) masked, and :func:`storable` (a NUL in it would fail
    the store of ``last_error`` on PostgreSQL)."""
    text = refusal_message(response.text) if message_only else response.text
    text = redact(storable(text.strip().replace("\n", " ")), key)
    return f": {text[: 300 if message_only else 200]}" if text else ""
