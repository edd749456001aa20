"""The reconciler: the database is the system of record, Redis only transport.

A conversation still ``queued`` or ``processing`` ``LEASE_SECONDS`` after its last update has lost its
message (Redis restarted or wiped, a worker killed mid-batch): it is sent to ``collect`` again. Each
worker process runs this at start-up and every ``RECONCILE_INTERVAL_SECONDS``; touching the rows it
re-sends hands each one to a single process.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from actors.batching import collect
from actors.broker import settings
from store import queries

logger = logging.getLogger(__name__)


def reconcile_once() -> int:
    """Re-send every stale open conversation; return how many."""
    total = 0
    cutoff = queries.utcnow() - timedelta(seconds=settings.lease_seconds)
    while stale := queries.reclaim_stale(cutoff):
        for conversation_id in stale:
            collect.send(conversation_id)
        total += len(stale)
    if total:
        logger.warning("reconciler re-enqueued %d stale conversation(s)", total)
    return total


class Reconciler(threading.Thread):
    """Runs :func:`reconcile_once` now and then every interval until stopped."""

    def __init__(self) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                reconcile_once()
            except Exception:  # Redis or the database away: try again next round
                logger.exception("reconciler round failed")
            self.stopped.wait(settings.reconcile_interval_seconds)

    def stop(self) -> None:
        self.stopped.set()
