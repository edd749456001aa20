"""The ``Idempotency-Key`` request header (the convention of payment APIs) on the POST endpoints.

A request without conversation ids may carry a key of the client's choosing. Repeated with the same body
within 24 hours it names the same conversations (a lost answer, a timeout, a retry: no second copy);
with another body it is a ``409 idempotency_key_reused``. Keys are scoped to the API key presented and to
the endpoint, and stored hashed (``store.idempotency``). A key is looked up first and bound (written) only
once its request is to be committed: a request the inbound limit refuses writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
from datetime import datetime

import falcon

from api.access import hash_key
from api.errors import ApiError
from api.middleware import presented_key
from store import idempotency, queries
from store.db import call_and_release
from store.idempotency import derived_id

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII


@dataclasses.dataclass(frozen=True)
class KeyUse:
    """A scoped key naming a request's conversations: the body it asks for, and when it was first used
    (now, while it is not ``bound`` in the database yet)."""

    key: str
    request_hash: str
    first_used: datetime
    bound: bool

    def conversation_id(self, index: int | None = None) -> str:
        return derived_id(self.key, self.first_used, index)


def invalid_header(message: str) -> ApiError:
    return ApiError(falcon.HTTP_400, "invalid_header", f"{HEADER}: {message}.", header=HEADER)


def request_key(req: falcon.Request, endpoint: str) -> str | None:
    """The request's key, scoped to who presents it and to ``endpoint``, hashed; ``None`` without one.
    Checked on every request that carries one, whether or not its body needs it."""
    sent = [value for name, value in req.scope["headers"] if name == HEADER.lower().encode()]
    if len(sent) > 1:  # Falcon would join them with a comma into one well-formed key
        raise invalid_header("given more than once")
    if not sent:
        return None
    raw = sent[0].decode("latin-1")
    if not VALID_KEY.fullmatch(raw):
        raise invalid_header("1 to 255 visible ASCII characters")
    presented = presented_key(req)
    principal = hash_key(presented) if presented else ""
    return hashlib.sha256(f"{principal}\n{endpoint}\n{raw}".encode()).hexdigest()


def reused() -> ApiError:
    return ApiError(
        falcon.HTTP_409,
        "idempotency_key_reused",
        f"This {HEADER} was used with a different body within the last 24 hours.",
    )


async def look_up(key: str, request_hash: str) -> KeyUse:
    """What ``key`` names for a request of ``request_hash``, without writing; ``409`` when it was used
    with another body within the TTL."""
    now = queries.utcnow()
    found = await asyncio.to_thread(call_and_release, idempotency.live_use, key, now)
    if found is None:
        return KeyUse(key, request_hash, now, bound=False)
    if found[0] != request_hash:
        raise reused()
    return KeyUse(key, request_hash, found[1], bound=True)


async def bind(use: KeyUse) -> KeyUse:
    """Record the key's first use, now that its request is to be committed; the use as the database
    keeps it (a concurrent request with the same key and body may have bound it first: its ids win)."""
    if use.bound:
        return use
    first_used = await asyncio.to_thread(
        call_and_release, idempotency.remember, use.key, use.request_hash, use.first_used
    )
    if first_used is None:
        raise reused()
    return dataclasses.replace(use, first_used=first_used, bound=True)


async def bind_and_rename(
    use: KeyUse, news: list[tuple[int | None, queries.NewConversation]], keyed: set[int | None]
) -> list[tuple[int | None, queries.NewConversation]]:
    """Bind ``use`` and give the conversations it names (their index in ``keyed``) the ids it derives."""
    use = await bind(use)
    return [
        (index, dataclasses.replace(new, id=use.conversation_id(index)) if index in keyed else new)
        for index, new in news
    ]
