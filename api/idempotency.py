"""The ``Idempotency-Key`` request header (the convention of payment APIs) on the POST endpoints.

A request without conversation ids may carry a key of the client's choosing. Repeated with the same body
within 24 hours it names the same conversations (a lost answer, a timeout, a retry: no second copy);
with another body it is a ``409 idempotency_key_reused``. Keys are scoped to the API key presented and to
the endpoint, and stored hashed (``store.idempotency``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import datetime

import falcon

from access import hash_key
from api.errors import ApiError
from api.middleware import presented_key
from store import idempotency, queries
from store.db import call_and_release

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII


def request_key(req: falcon.Request, endpoint: str) -> str | None:
    """The request's key, scoped to who presents it and to ``endpoint``, hashed; ``None`` without one."""
    raw = req.get_header(HEADER)
    if raw is None:
        return None
    if not VALID_KEY.fullmatch(raw):
        raise ApiError(falcon.HTTP_400, "invalid_header", f"{HEADER}: 1 to 255 visible ASCII characters.", header=HEADER)
    presented = presented_key(req)
    principal = hash_key(presented) if presented else ""
    return hashlib.sha256(f"{principal}\n{endpoint}\n{raw}".encode()).hexdigest()


async def first_use(req: falcon.Request, endpoint: str, request_hash: str) -> tuple[str, datetime] | None:
    """The scoped key and when it was first used, for a request that carries one; ``409`` when the key
    was used with another body within the TTL."""
    key = request_key(req, endpoint)
    if key is None:
        return None
    first_used = await asyncio.to_thread(call_and_release, idempotency.remember, key, request_hash, queries.utcnow())
    if first_used is None:
        raise ApiError(falcon.HTTP_409, "idempotency_key_reused",
                       f"This {HEADER} was used with a different body within the last 24 hours.")
    return key, first_used
