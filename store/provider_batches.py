"""The bulk lane's provider batches in the database: forming one, a worker's lease on it, its requests.

A provider batch is formed in one transaction that claims its conversations (``processing``, one attempt
each, under the batch's claim token, naming the batch) and writes every request it will send, each under
a ``batch_request_id`` fixed now. Everything a worker later does to it (create it at xAI, send its
requests, poll, collect) is recorded here step by step, so a worker killed at any point leaves a row
from which the next one carries on, and a resend carries the same ids.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from peewee import fn

from insights.costs import Tokens
from store import outbox
from store.claims import claim_rows
from store.db import locked, write_transaction
from store.models import (
    BULK,
    ENDED,
    PROCESSING,
    QUEUED,
    Conversation,
    ProviderBatch,
    ProviderBatchRequest,
    database,
)
from store.queries import utcnow

CANCELLED_BY_AN_OPERATOR = "cancelled by an operator"  # the end reason of a batch cancelled by a person
REFUSED_BY_XAI = "refused by xAI"  # how the end reason of a batch xAI refused outright begins


@dataclass(frozen=True)
class Forming:
    """How provider batches are cut from the bulk lane's waiting conversations."""

    max_conversations: int  # BULK_BATCH_CONVERSATIONS
    per_request: int  # BATCH_SIZE: conversations answered by one chat completion
    flush_seconds: float  # BULK_FLUSH_SECONDS: a smaller batch once the oldest has waited this long
    max_attempts: int  # MAX_RETRIES
    poll_seconds: float  # BULK_POLL_SECONDS: the first interval between polls


def form(rules: Forming) -> ProviderBatch | None:
    """Claim the oldest waiting bulk conversations into a new provider batch, if enough wait or the oldest
    has waited long enough; ``None`` otherwise.

    Conversations share requests, ``per_request`` to one, except those whose own request failed (an error,
    a truncated or unusable answer: ``Conversation.isolated``): each gets a request of its own, so that one
    conversation's trouble cannot keep failing its neighbours (the real-time lane splits batches instead).
    A batch that ended as a whole (expired, failed, cancelled, given up, unknown to xAI) isolates nobody: it
    says nothing against any one of its conversations, so they share requests again, as on their first try.
    """
    now = utcnow()
    with write_transaction(database.obj):
        waiting = list(
            locked(
                Conversation.select(  # not the payloads; what claim_rows tells the webhooks of one it fails
                    Conversation.id,
                    Conversation.attempts,
                    Conversation.enqueued_at,
                    Conversation.isolated,
                    Conversation.last_error,
                    Conversation.occurred_at,
                )
                .where(Conversation.lane == BULK, Conversation.status == QUEUED)
                .order_by(Conversation.enqueued_at, Conversation.id)
                .limit(rules.max_conversations)
            )
        )
        if not waiting:
            return None
        if len(waiting) < rules.max_conversations and waiting[0].enqueued_at > now - timedelta(
            seconds=rules.flush_seconds
        ):
            return None
        batch_id = f"bulk_{uuid.uuid4().hex}"
        claim = claim_rows(waiting, rules.max_attempts, provider_batch=batch_id)
        if not claim.conversations:
            return None
        groups = _request_groups(claim.conversations, rules.per_request)
        batch = ProviderBatch.create(
            id=batch_id,
            claim_token=claim.token,
            conversations=len(claim.conversations),
            created_at=now,
            next_look_at=now,
            poll_seconds=rules.poll_seconds,
        )
        ProviderBatchRequest.insert_many(
            [
                {"id": f"{batch_id}-{number}", "provider_batch": batch_id, "conversation_ids": json.dumps(group)}
                for number, group in enumerate(groups)
            ]
        ).execute()
    return batch


def _request_groups(conversations: list[Conversation], per_request: int) -> list[list[str]]:
    """Conversations ``per_request`` to a request, the isolated ones alone."""
    shared = [c.id for c in conversations if not c.isolated]
    alone = [[c.id] for c in conversations if c.isolated]
    return [shared[i : i + per_request] for i in range(0, len(shared), per_request)] + alone


def due(limit: int = 50) -> list[str]:
    """Provider batches not ended whose next look is due and that no worker holds."""
    now = utcnow()
    query = (
        ProviderBatch.select(ProviderBatch.id)
        .where(ProviderBatch.state != ENDED, ProviderBatch.next_look_at <= now, _free(now))
        .order_by(ProviderBatch.next_look_at)
        .limit(limit)
    )
    return [row[0] for row in query.tuples()]


def _free(now: datetime):
    return ProviderBatch.worked_until.is_null() | (ProviderBatch.worked_until < now)


def take(batch_id: str, lease_seconds: float) -> ProviderBatch | None:
    """This worker's lease on the batch, if nobody holds it: the batch as it is now, or ``None``."""
    now = utcnow()
    taken = (
        ProviderBatch.update(worked_until=now + timedelta(seconds=lease_seconds))
        .where(ProviderBatch.id == batch_id, ProviderBatch.state != ENDED, _free(now))
        .execute()
    )
    return ProviderBatch.get_by_id(batch_id) if taken else None


def take_again(batch_id: str, lease_seconds: float) -> None:
    """Renew this worker's lease (a long step renews it as it goes)."""
    update(batch_id, worked_until=utcnow() + timedelta(seconds=lease_seconds))


def update(batch_id: str, **changes: Any) -> None:
    ProviderBatch.update(**changes).where(ProviderBatch.id == batch_id).execute()


def let_go(batch_id: str, look_in_seconds: float, **changes: Any) -> None:
    """Give up the lease, with the next look due in ``look_in_seconds``."""
    update(batch_id, worked_until=None, next_look_at=utcnow() + timedelta(seconds=look_in_seconds), **changes)


def requests_of(
    batch_id: str, submitted: bool | None = None, settled: bool | None = None
) -> list[ProviderBatchRequest]:
    query = ProviderBatchRequest.select().where(ProviderBatchRequest.provider_batch == batch_id)
    if submitted is not None:
        query = query.where(ProviderBatchRequest.submitted == submitted)
    if settled is not None:
        query = query.where(ProviderBatchRequest.settled == settled)
    return list(query.order_by(ProviderBatchRequest.id))


def mark_requests(request_ids: list[str], **changes: bool) -> None:
    ProviderBatchRequest.update(**changes).where(ProviderBatchRequest.id.in_(request_ids)).execute()


def isolate(conversation_ids: list[str]) -> None:
    """Their own request failed: each of ``conversation_ids`` gets a request of its own from now on."""
    if conversation_ids:
        Conversation.update(isolated=True).where(Conversation.id.in_(conversation_ids)).execute()


def payloads(conversation_ids: list[str]) -> dict[str, str]:
    """The payload of each of ``conversation_ids``."""
    query = Conversation.select(Conversation.id, Conversation.payload).where(Conversation.id.in_(conversation_ids))
    return dict(query.tuples())


def add_usage(batch_id: str, tokens: Tokens | None, cost: float | None) -> None:
    """Count a collected result's tokens (``None``: it reported none) and ``cost`` (``None``: not known)."""
    tokens = tokens or Tokens()
    billed = (
        {"cost_usd": ProviderBatch.cost_usd + cost}
        if cost is not None
        else {"unpriced_results": ProviderBatch.unpriced_results + 1}
    )
    update(
        batch_id,
        prompt_tokens=ProviderBatch.prompt_tokens + int(tokens.prompt),
        cached_tokens=ProviderBatch.cached_tokens + int(tokens.cached),
        completion_tokens=ProviderBatch.completion_tokens + int(tokens.completion),
        **billed,
    )


def end(batch_id: str, reason: str) -> None:
    """End a provider batch, and tell the webhooks (``store.outbox``) in the same transaction."""
    now = utcnow()
    with write_transaction(database.obj):
        update(batch_id, state=ENDED, end_reason=reason, ended_at=now, worked_until=None)
        if (batch := ProviderBatch.get_or_none(ProviderBatch.id == batch_id)) is not None:
            outbox.batch_ended_event(batch, now)


def request_cancel(batch_id: str) -> int | None:
    """Ask the worker that next looks at the batch to cancel it at xAI; return how many of its conversations
    are still waiting for an answer, or ``None`` if it has ended."""
    now = utcnow()
    with write_transaction(database.obj):
        asked = (
            ProviderBatch.update(cancel_requested=True, next_look_at=now)
            .where(ProviderBatch.id == batch_id, ProviderBatch.state != ENDED)
            .execute()
        )
        unanswered = Conversation.select().where(
            Conversation.lane == BULK, Conversation.status == PROCESSING, Conversation.provider_batch == batch_id
        )  # by the lane's index
        return unanswered.count() if asked else None


def cancelled_by_an_operator(batch: ProviderBatch) -> bool:
    """A person cancelled it (``insights bulk cancel``): not its conversations' doing, so no attempt is spent."""
    return batch.cancel_requested or batch.end_reason == CANCELLED_BY_AN_OPERATOR


def refused_since(since: datetime) -> str | None:
    """The end reason of the latest batch xAI refused outright since ``since``, if one was."""
    latest = (
        ProviderBatch.select(ProviderBatch.end_reason)
        .where(ProviderBatch.state == ENDED, ProviderBatch.ended_at >= since)
        .where(ProviderBatch.end_reason.startswith(REFUSED_BY_XAI))
        .order_by(ProviderBatch.ended_at.desc())
        .first()
    )
    return latest.end_reason if latest else None


def listing(open_only: bool = True, limit: int = 100) -> list[ProviderBatch]:
    """Provider batches, newest first."""
    query = ProviderBatch.select().order_by(ProviderBatch.created_at.desc(), ProviderBatch.id).limit(limit)
    return list(query.where(ProviderBatch.state != ENDED) if open_only else query)


def find(batch_id: str) -> ProviderBatch | None:
    return ProviderBatch.get_or_none(ProviderBatch.id == batch_id)


def states() -> dict[str, int]:
    """How many provider batches are in each state (``open``, ``submitted``, ``ended``)."""
    count = fn.COUNT(ProviderBatch.id)
    return dict(ProviderBatch.select(ProviderBatch.state, count).group_by(ProviderBatch.state).tuples())


def bulk_depth() -> dict[str, int]:
    """The bulk lane's conversations: waiting for a batch (``queued``) and in one (``processing``)."""
    count = fn.COUNT(Conversation.id)
    query = (
        Conversation.select(Conversation.status, count)
        .where(Conversation.lane == BULK, Conversation.status.in_((QUEUED, PROCESSING)))
        .group_by(Conversation.status)
    )
    return {QUEUED: 0, PROCESSING: 0, **dict(query.tuples())}
