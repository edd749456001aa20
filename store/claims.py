"""Claims: conversations moved to ``processing`` for one analysis under a fresh claim token, and what the
analysis's outcome does to them while they are open (back to ``queued``, an attempt refunded, a reason
noted, ``failed``); and the open ones that lost their way, taken back (``actors.reconciler``).

A reason is stored as it is given: whoever words it keeps secrets out of it (``Settings.redact``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import fn

from store import outbox
from store.db import locked, unindexed, write_transaction
from store.models import FAILED, LANES, PROCESSING, QUEUED, Conversation, database
from store.queries import OPEN_STATUSES, utcnow


@dataclass(frozen=True)
class Claim:
    """Conversations moved to ``processing`` together, and the token that their result must carry."""

    token: str
    conversations: list[Conversation]


def claim_for_processing(
    conversation_ids: Iterable[str], max_attempts: int, lanes: Iterable[str] = LANES, worker: str | None = None
) -> Claim:
    """Move the ``queued`` conversations of ``lanes`` among ``conversation_ids`` to ``processing`` for
    ``worker`` (its lease keeps them there, ``store.workers``), counting an attempt, under a fresh claim
    token: only a result carrying it is stored for them (``store.results``), so a result of an earlier
    claim, delivered late or again, cannot overwrite a later one or cancel a reprocess.

    A conversation already ``processing`` is not claimed again: its call may still answer. It returns to
    ``queued`` only when its worker's lease lapses (``store.workers.reclaim_lapsed``) or its batch gives it back.
    """
    ids = list(conversation_ids)
    with write_transaction(database.obj):
        waiting = list(
            locked(
                Conversation.select().where(
                    Conversation.id.in_(ids),
                    unindexed(Conversation.status) == QUEUED,
                    unindexed(Conversation.lane).in_(list(lanes)),
                )
            )
        )
        return claim_rows(waiting, max_attempts, claimed_by=worker)


def claim_rows(open_rows: list[Conversation], max_attempts: int, **changes: Any) -> Claim:
    """Claim ``open_rows`` (read under the write lock by the caller's transaction), setting ``changes`` too.

    One that has already used ``max_attempts`` is ``failed`` instead, its last error followed by "(gave up
    after N attempts)": concatenated with ``||`` (``+`` would add the texts as numbers on SQLite, and
    PostgreSQL refuses it, failing the whole batch).
    """
    now, token = utcnow(), uuid.uuid4().hex
    spent = [c.id for c in open_rows if c.attempts >= max_attempts]
    claimed = [c for c in open_rows if c.attempts < max_attempts]
    if spent:
        previous = fn.COALESCE(Conversation.last_error.concat(" "), "")  # NULL || ' ' is NULL: no stray space
        gave_up_after = f"gave up after {max_attempts} attempts"
        gave_up = previous.concat(f"({gave_up_after})")
        Conversation.update(status=FAILED, last_error=gave_up, updated_at=now).where(
            Conversation.id.in_(spent)
        ).execute()
        given_up = [
            (c.id, " ".join(filter(None, [c.last_error, f"({gave_up_after})"])), c.occurred_at) for c in open_rows
        ]
        outbox.failed_events([failure for failure in given_up if failure[0] in spent], now)
    if claimed:
        (
            Conversation.update(
                status=PROCESSING, attempts=Conversation.attempts + 1, claim_token=token, updated_at=now, **changes
            )
            .where(Conversation.id.in_([c.id for c in claimed]))
            .execute()
        )
    return Claim(token, claimed)


def _update_open(conversation_ids: Iterable[str], claim_token: str | None, **changes: Any) -> int:
    """Apply ``changes`` to the conversations among ``conversation_ids`` that are still open and, given a
    ``claim_token``, still under that claim: a batch that fails late cannot requeue, refund or fail a
    conversation that another batch has claimed since."""
    return Conversation.update(updated_at=utcnow(), **changes).where(*_open(conversation_ids, claim_token)).execute()


def _open(conversation_ids: Iterable[str], claim_token: str | None) -> list:
    """The conditions of :func:`_update_open`."""
    conditions = [Conversation.id.in_(list(conversation_ids)), unindexed(Conversation.status).in_(OPEN_STATUSES)]
    if claim_token is not None:
        conditions.append(Conversation.claim_token == claim_token)
    return conditions


def requeue_claimed(conversation_ids: Iterable[str], reason: str, claim_token: str) -> int:
    """Back to ``queued`` with ``reason``, the attempt their claim counted kept (a transient failure)."""
    return _update_open(conversation_ids, claim_token, status=QUEUED, last_error=reason)


def refund_attempt(
    conversation_ids: Iterable[str], requeue: bool = False, claim_token: str | None = None, reason: str | None = None
) -> int:
    """Take back the attempt a claim counted (the failure was not theirs), optionally back to ``queued``
    and with the ``reason`` they wait."""
    changes: dict[str, Any] = {"attempts": Conversation.attempts - 1}
    if requeue:
        changes["status"] = QUEUED
    if reason is not None:
        changes["last_error"] = reason
    return _update_open(conversation_ids, claim_token, **changes)


def note_error(conversation_ids: Iterable[str], reason: str, claim_token: str | None = None) -> int:
    """Record why the open conversations are waiting (and renew their lease)."""
    return _update_open(conversation_ids, claim_token, last_error=reason)


def fail_open(conversation_ids: Iterable[str], reason: str, claim_token: str | None = None) -> int:
    """Mark the still-open conversations ``failed`` with ``reason`` (and tell the webhooks, ``store.outbox``)."""
    ids = list(conversation_ids)
    with write_transaction(database.obj):
        open_rows = list(
            locked(Conversation.select(Conversation.id, Conversation.occurred_at).where(*_open(ids, claim_token)))
        )
        if not open_rows:
            return 0
        failing = _update_open([c.id for c in open_rows], claim_token, status=FAILED, last_error=reason)
        outbox.failed_events([(c.id, reason, c.occurred_at) for c in open_rows], utcnow())
    return failing


def reclaim_stale(
    older_than: datetime, claimed_before: datetime, lanes: Iterable[str] = LANES, limit: int = 1000
) -> list[str]:
    """Ids of open conversations of ``lanes`` whose message may be lost, back to ``queued`` and touched, so
    that each goes to one caller: ``queued`` ones untouched since ``older_than``, ``processing`` ones that
    name no worker (claimed by a release before leases) untouched since then, and ``processing`` ones of a
    live worker untouched since ``claimed_before`` (longer than any call takes: their finish failed and so
    did giving them back, the database away). A dead worker's claims are :func:`store.workers.reclaim_lapsed`'s."""
    stale_query = (
        Conversation.select(Conversation.id)
        .where(
            Conversation.status.in_(OPEN_STATUSES),
            Conversation.lane.in_(list(lanes)),
            (Conversation.status == QUEUED)
            | Conversation.claimed_by.is_null()
            | (Conversation.updated_at < claimed_before),
            Conversation.updated_at < older_than,
        )
        .order_by(Conversation.updated_at)
        .limit(limit)
    )
    with write_transaction(database.obj):
        stale = [c.id for c in locked(stale_query)]
        if stale:
            Conversation.update(status=QUEUED, updated_at=utcnow()).where(Conversation.id.in_(stale)).execute()
    return stale
