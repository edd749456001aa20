"""Worker leases: which worker processes are alive, as the database sees it.

Each worker process renews its lease every third of ``LEASE_SECONDS`` from its event loop
(``actors.calls``); a conversation it claimed stays ``processing`` while the lease holds, however long its
call takes, and goes back to ``queued`` as soon as the lease lapses (:func:`reclaim_lapsed`): a killed
worker's conversations are sent again within a lease, batch by batch as it claimed them, and a live one's
never while its call may answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import timedelta

from store.db import locked, write_transaction
from store.models import LANES, PROCESSING, QUEUED, Conversation, WorkerLease, database
from store.queries import utcnow

FORGET_AFTER = timedelta(days=1)  # a lapsed lease is kept this long (it still explains old claims)


def renew(worker: str, lease_seconds: float) -> None:
    """Hold ``worker``'s lease for ``lease_seconds`` from now."""
    expires_at = utcnow() + timedelta(seconds=lease_seconds)
    (
        WorkerLease.insert(worker=worker, expires_at=expires_at)
        .on_conflict(conflict_target=[WorkerLease.worker], update={WorkerLease.expires_at: expires_at})
        .execute()
    )


def release(worker: str) -> None:
    """End ``worker``'s lease now (a clean shutdown, once its claims are given back)."""
    WorkerLease.update(expires_at=utcnow()).where(WorkerLease.worker == worker).execute()


def forget_lapsed() -> int:
    """Drop leases that lapsed long ago; return how many."""
    return WorkerLease.delete().where(WorkerLease.expires_at < utcnow() - FORGET_AFTER).execute()


def reclaim_lapsed(lanes: Iterable[str] = LANES, limit: int = 1000) -> list[list[str]]:
    """The ``processing`` conversations of ``lanes`` whose worker's lease has lapsed (killed mid-call), back
    to ``queued`` (attempt kept) and touched, so that each goes to one caller: up to about ``limit`` ids, as
    the batches the dead worker claimed them in (one claim token a batch), oldest claim first."""
    live = WorkerLease.select(WorkerLease.worker).where(WorkerLease.expires_at > utcnow())
    query = (
        Conversation.select(Conversation.id, Conversation.claim_token)
        .where(
            Conversation.status == PROCESSING,
            Conversation.lane.in_(list(lanes)),
            Conversation.claimed_by.is_null(False),
            Conversation.claimed_by.not_in(live),
        )
        .order_by(Conversation.updated_at, Conversation.claim_token)
        .limit(limit)
    )
    with write_transaction(database.obj):
        rows = [(c.id, c.claim_token) for c in locked(query)]
        if rows:
            ids = [conversation_id for conversation_id, _token in rows]
            Conversation.update(status=QUEUED, updated_at=utcnow()).where(Conversation.id.in_(ids)).execute()
    return [
        [conversation_id for conversation_id, _token in batch]
        for _token, batch in itertools.groupby(rows, key=lambda row: row[1])
    ]
