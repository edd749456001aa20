"""Worker leases: which worker processes are alive, as the database sees it.

Each worker process renews its lease every third of ``LEASE_SECONDS`` from its event loop
(``actors.calls``); a conversation it claimed stays ``processing`` while the lease holds, however long its
call takes, and goes back to ``queued`` as soon as the lease lapses (``queries.reclaim_stale``): a killed
worker's conversations are sent again within a lease, a live one's never while its call may answer.
"""

from __future__ import annotations

from datetime import timedelta

from store.models import WorkerLease
from store.queries import utcnow

FORGET_AFTER = timedelta(days=1)  # a lapsed lease is kept this long (it still explains old claims)


def renew(worker: str, lease_seconds: float) -> None:
    """Hold ``worker``'s lease for ``lease_seconds`` from now."""
    expires_at = utcnow() + timedelta(seconds=lease_seconds)
    (WorkerLease.insert(worker=worker, expires_at=expires_at)
     .on_conflict(conflict_target=[WorkerLease.worker], update={WorkerLease.expires_at: expires_at})
     .execute())


def release(worker: str) -> None:
    """End ``worker``'s lease now (a clean shutdown, once its claims are given back)."""
    WorkerLease.update(expires_at=utcnow()).where(WorkerLease.worker == worker).execute()


def forget_lapsed() -> int:
    """Drop leases that lapsed long ago; return how many."""
    return WorkerLease.delete().where(WorkerLease.expires_at < utcnow() - FORGET_AFTER).execute()
