"""Conversations: accepting them, their status moves (each in one transaction) and the reads those need.
Claiming them for an analysis and what a claim's outcome does to them is in ``store.claims``; storing an
analysis's results in ``store.results``; pages of insights, exports and summaries in ``store.reports``.

Status moves only forward: ``queued -> processing -> completed | failed``; a conversation goes back to
``queued`` only when a failed attempt is retried, its batch is set aside, or the worker that claimed it
stopped renewing its lease. Times are naive UTC.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from peewee import JOIN, fn

from insights.schemas import as_utc
from store.db import locked, unindexed, write_transaction
from store.models import (
    COMPLETED,
    FAILED,
    LANES,
    PROCESSING,
    QUEUED,
    REALTIME,
    Conversation,
    Insight,
    database,
)

OPEN_STATUSES = (QUEUED, PROCESSING)


def utcnow() -> datetime:
    """Now, as naive UTC (how times are stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_db_time(moment: datetime) -> datetime:
    """An aware or naive-UTC datetime as stored: naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def parse_db_time(text: str) -> datetime:
    """ISO-8601 text (no offset means UTC) as stored: naive UTC. ``ValueError`` when it is not one, or
    when its offset moves it outside years 1 to 9999."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {text!r}") from None
    try:
        return to_db_time(as_utc(moment))
    except ValueError:
        raise ValueError(f"{text!r} falls outside years 1 to 9999 in UTC") from None


class InsertOutcome(enum.Enum):
    CREATED = "created"
    DUPLICATE = "duplicate"  # same id, same payload: already accepted
    CONFLICT = "conflict"  # same id, another payload


@dataclass(frozen=True)
class NewConversation:
    id: str
    payload: str  # canonical JSON of messages and metadata
    payload_hash: str
    received_at: datetime
    occurred_at: datetime  # insights.incoming.occurred_at_of
    lane: str = REALTIME

    @classmethod
    def of(
        cls,
        conversation_id: str,
        payload: str,
        received_at: datetime,
        occurred_at: datetime | None = None,
        lane: str = REALTIME,
    ) -> NewConversation:
        return cls(conversation_id, payload, payload_digest(payload), received_at, occurred_at or received_at, lane)


def payload_digest(payload: str) -> str:
    """What tells two payloads under one id apart (SHA-256 of the canonical JSON)."""
    return hashlib.sha256(payload.encode()).hexdigest()


def insert_conversations(conversations: list[NewConversation]) -> list[InsertOutcome]:
    """Commit new ``queued`` conversations in one transaction; say for each how it went, in order.

    An id already taken (before, or earlier in the same list) is a ``DUPLICATE`` when the payload is the
    same, else a ``CONFLICT``. One multi-row statement, so bulk loads are fast.
    """
    first_of_id = {new.id: new for new in reversed(conversations)}
    with write_transaction(database.obj):
        created = _insert_new(list(first_of_id.values()))
        hashes = accepted_hashes([i for i in first_of_id if i not in created])
    outcomes = []
    for new in conversations:
        if new.id in created and first_of_id[new.id] is new:
            outcomes.append(InsertOutcome.CREATED)
        else:
            outcomes.append(known_outcome(new, {new.id: first_of_id[new.id].payload_hash, **hashes}))
    return outcomes


def accepted_hashes(conversation_ids: list[str]) -> dict[str, str]:
    """The payload hash of each of ``conversation_ids`` already accepted (absent ids are left out)."""
    if not conversation_ids:
        return {}
    query = Conversation.select(Conversation.id, Conversation.payload_hash).where(Conversation.id.in_(conversation_ids))
    return dict(query.tuples())


def known_outcome(new: NewConversation, hashes: dict[str, str]) -> InsertOutcome | None:
    """``DUPLICATE`` or ``CONFLICT`` when ``new``'s id is among the accepted ``hashes``, else ``None``."""
    if new.id not in hashes:
        return None
    return InsertOutcome.DUPLICATE if hashes[new.id] == new.payload_hash else InsertOutcome.CONFLICT


INSERT_COLUMNS = (
    "id",
    "status",
    "payload",
    "payload_hash",
    "received_at",
    "updated_at",
    "enqueued_at",
    "occurred_at",
    "attempts",
    "lane",
)


def _insert_new(conversations: list[NewConversation]) -> set[str]:
    """Insert the conversations whose id is free, in one statement; return the ids inserted.

    Written as SQL: building a 1,000-row insert with Peewee's query builder costs more than the rest of
    a bulk import together (about 65 us a row).
    """
    if not conversations:
        return set()
    db = database.obj
    placeholders = "(" + ", ".join([db.param] * len(INSERT_COLUMNS)) + ")"
    values = [value for new in conversations for value in _insert_row(new)]
    sql = (
        f"INSERT INTO conversations ({', '.join(INSERT_COLUMNS)}) VALUES "
        f"{', '.join([placeholders] * len(conversations))} "
        "ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    return {row[0] for row in db.execute_sql(sql, values).fetchall()}


def _insert_row(new: NewConversation) -> tuple:
    """The values of ``INSERT_COLUMNS`` for a new conversation: received, updated and enqueued now."""
    received, occurred = (
        Conversation.received_at.db_value(new.received_at),
        Conversation.occurred_at.db_value(new.occurred_at),
    )
    return (new.id, QUEUED, new.payload, new.payload_hash, received, received, received, occurred, 0, new.lane)


def get_conversation(conversation_id: str) -> tuple[Conversation, Insight | None] | None:
    row = (
        Conversation.select(Conversation, Insight)
        .join(Insight, JOIN.LEFT_OUTER, on=(Insight.conversation == Conversation.id), attr="insight")
        .where(Conversation.id == conversation_id)
        .first()
    )
    if row is None:
        return None
    insight = row.insight if getattr(row, "insight", None) and row.insight.analyzed_at else None
    return row, insight


def payload_chars(conversation_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Size in characters of each conversation's payload, and its lane (absent ids are left out)."""
    length = fn.LENGTH(Conversation.payload).coerce(False)  # an integer, not converted like the text field
    query = Conversation.select(Conversation.id, length, Conversation.lane).where(Conversation.id.in_(conversation_ids))
    return {conversation_id: (chars, lane) for conversation_id, chars, lane in query.tuples()}


def waiting_payloads(conversation_ids: Iterable[str], lanes: Iterable[str] = LANES) -> dict[str, str]:
    """The payload of each ``queued`` conversation of ``lanes`` among ``conversation_ids`` (read, not
    claimed): one already ``processing`` is under a call that may still answer."""
    query = Conversation.select(Conversation.id, Conversation.payload).where(
        Conversation.id.in_(list(conversation_ids)),
        unindexed(Conversation.status) == QUEUED,
        unindexed(Conversation.lane).in_(list(lanes)),
    )
    return dict(query.tuples())


def last_errors(conversation_ids: Iterable[str], open_only: bool = False) -> list[str]:
    """The ``last_error`` recorded on the conversations among ``conversation_ids`` (open ones only, if
    asked), most frequent first."""
    count = fn.COUNT(Conversation.id)
    query = Conversation.select(Conversation.last_error, count).where(
        Conversation.id.in_(list(conversation_ids)), Conversation.last_error.is_null(False)
    )
    if open_only:
        query = query.where(Conversation.status.in_(OPEN_STATUSES))
    return [
        error
        for error, _n in query.group_by(Conversation.last_error)
        .order_by(count.desc(), Conversation.last_error)
        .tuples()
    ]


def ping() -> None:
    """Raise if the database does not answer."""
    database.execute_sql("SELECT 1").fetchone()


def requeue(conversation_ids: Iterable[str]) -> list[str]:
    """An operator's explicit retry: conversations not completed go back to ``queued`` with attempts reset."""
    ids = list(conversation_ids)
    with write_transaction(database.obj):
        chosen = [
            c.id
            for c in locked(
                Conversation.select(Conversation.id).where(Conversation.id.in_(ids), Conversation.status != COMPLETED)
            )
        ]
        if chosen:
            Conversation.update(**requeued(utcnow())).where(Conversation.id.in_(chosen)).execute()
    return chosen


def requeued(now: datetime) -> dict[str, Any]:
    """The changes that send a conversation back for a fresh analysis: a new wait begins ``now``, and no
    earlier failure of its own sends it alone in the bulk lane."""
    return {
        "status": QUEUED,
        "attempts": 0,
        "last_error": None,
        "updated_at": now,
        "enqueued_at": now,
        "isolated": False,
    }


def reprocess_candidates(failed: bool, start: datetime | None = None, end: datetime | None = None) -> list[str]:
    """Ids to analyze again: every ``failed`` one, or every settled one that occurred in ``[start, end)``."""
    query = Conversation.select(Conversation.id).order_by(Conversation.occurred_at, Conversation.id)
    if failed:
        query = query.where(Conversation.status == FAILED)
    else:
        query = query.where(
            Conversation.status.in_((COMPLETED, FAILED)),
            Conversation.occurred_at >= start,
            Conversation.occurred_at < end,
        )
    return [row[0] for row in query.tuples()]


def reopen(conversation_ids: list[str], lane: str = REALTIME) -> int:
    """An explicit reprocessing: settled conversations go back to ``queued`` in ``lane``, attempts reset.

    Their current insight stays (and the API shows it) until the new analysis replaces it; the old one
    is then kept in ``insight_history``.
    """
    return (
        Conversation.update(**requeued(utcnow()), lane=lane)
        .where(Conversation.id.in_(conversation_ids), Conversation.status.in_((COMPLETED, FAILED)))
        .execute()
    )
