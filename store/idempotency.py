"""Idempotency keys: a client that retries a request without ids gets the ids of its first try.

A key is remembered for ``TTL`` with the hash of the request that first used it. Conversation ids are
derived from the key and the moment it was first used (:func:`derived_id`), so a repeat within the TTL
names the same conversations, which the store then answers as duplicates; a key reused after the TTL
starts afresh. Keys are stored in the database, beside the conversations they name: Redis may lose
everything, a retry must still find its conversation.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from store.db import write_transaction
from store.models import IdempotencyKey, database

TTL = timedelta(hours=24)


def live_use(key: str, now: datetime) -> tuple[str, datetime] | None:
    """The request hash ``key`` is bound to and when it was first used, unless it is unused or forgotten
    (past the TTL). Reads only: a request may yet be refused (``429``), and a refused one writes nothing."""
    entry = IdempotencyKey.get_or_none(IdempotencyKey.key == key, IdempotencyKey.created_at >= now - TTL)
    return None if entry is None else (entry.request_hash, entry.created_at)


def remember(key: str, request_hash: str, now: datetime) -> datetime | None:
    """Record that ``key`` asks for ``request_hash`` unless a live entry exists; return when the key was
    first used, or ``None`` when it was used with another request within the TTL.

    Two first uses at once both insert; the database keeps one, and the other reads it back.
    """
    with write_transaction(database.obj):
        IdempotencyKey.delete().where(IdempotencyKey.key == key, IdempotencyKey.created_at < now - TTL).execute()
        IdempotencyKey.insert(key=key, request_hash=request_hash, created_at=now).on_conflict_ignore().execute()
        entry = IdempotencyKey.get(IdempotencyKey.key == key)
    return entry.created_at if entry.request_hash == request_hash else None


def derived_id(key: str, first_used: datetime, index: int | None = None) -> str:
    """The id of the conversation (of item ``index`` of a batch) that ``key``, first used at
    ``first_used``, names: it matches the API's id pattern and is unique to the pair."""
    digest = hashlib.sha256(f"{key}\n{first_used.isoformat()}".encode()).hexdigest()[:32]
    return f"idem_{digest}" if index is None else f"idem_{digest}-{index}"


def forget_expired(now: datetime) -> int:
    """Delete the keys past their TTL (the reconciler does, now and then); return how many."""
    return IdempotencyKey.delete().where(IdempotencyKey.created_at < now - TTL).execute()
