"""Reading xAI's refusals: when to come back (``Retry-After``), what the body says (never the key), and
whether a refusal is about what the request contains.

Shared by the real-time client (``insights.grok``) and the Batch API client (``insights.batch_api``);
``response`` is either library's (``httpx`` or ``requests``): both have ``.text``.
"""

from __future__ import annotations

import email.utils
from datetime import datetime, timezone
from typing import Protocol

from insights.schemas import storable
from insights.secrets import redact

CONTENT_REFUSALS = ("violates", "usage guidelines", "safety", "content polic", "prompt length", "context length", "too long", "too large")


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
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


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


def error_detail(response: HasText, key: str) -> str:
    """A short excerpt of an error body for ``last_error`` and logs, with the key (or a prefix) masked, and
    :func:`storable` (a NUL in it would fail the store of ``last_error`` on PostgreSQL)."""
    text = redact(storable(response.text.strip().replace("\n", " ")), key)
    return f": {text[:200]}" if text else ""
