"""The reconciler: the database is the system of record, Redis only transport.

Two kinds of conversation have lost their way:

- ``processing`` under a worker whose lease has lapsed (``store.workers``): the worker died mid-call. A
  live worker renews its lease while its calls are in flight, so its conversations are never sent twice.
  They are sent again as the batches the dead worker claimed, on the ``analyze-again`` queue, so that they
  do not wait behind a backlog a second time;
- ``queued`` ``REQUEUE_SECONDS`` after its last update (longer while there is a backlog, see
  :func:`effective_lease`): its message is gone (Redis restarted or wiped). These go to the batching
  stream again;
- ``processing`` under a live worker, untouched for that long and then for as long as a call can last
  twice over (waiting for room in the engine, then its own timeouts): the worker's finish failed and so
  did giving the batch back (the database away). Its lease, renewed for ever, would keep them. Should
  the call somehow still be open, its late answer carries an old claim token and is not stored.

Each worker process runs this at start-up and every ``RECONCILE_INTERVAL_SECONDS``; the rows it re-sends
go back to ``queued``, touched, which hands each one to a single process.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from actors.broker import (
    AGAIN_QUEUE,
    ANALYZE_QUEUE,
    queue_key,
    redis_client,
    send_batch,
    send_for_batching,
    settings,
    stream_key,
    streamed_lanes,
)
from store import claims, idempotency, queries, workers
from store.db import call_and_release

logger = logging.getLogger(__name__)


def effective_lease() -> float:
    """``REQUEUE_SECONDS``, stretched by the time the backlog needs to drain at ``OUTBOUND_RPS`` batches a
    second (the analysis queue's batches, and the stream's ids not yet cut into batches): behind a
    backlog (a burst, a large import), a conversation waiting for its turn has not lost its message, and
    re-sending it would only add a duplicate batch to the end of the queue."""
    client = redis_client()
    pipe = client.pipeline(transaction=False)
    for queue in (ANALYZE_QUEUE, AGAIN_QUEUE):
        pipe.hlen(queue_key(queue, "msgs"))
        pipe.hlen(queue_key(queue, "DQ.msgs"))
    pipe.xlen(stream_key())
    *batches, streamed = pipe.execute()
    current = settings()
    return current.requeue_seconds + (sum(batches) + streamed / current.batch_size) / current.outbound_rps


def reconcile_once() -> int:
    """Re-send every open conversation that lost its way; return how many."""
    total, lanes = 0, streamed_lanes(settings())
    while lapsed := workers.reclaim_lapsed(lanes):
        for batch in lapsed:
            send_batch(batch, queue=AGAIN_QUEUE)
        total += sum(map(len, lapsed))
    current, lease = settings(), effective_lease()
    call_bound = 2 * (current.grok_connect_timeout_seconds + current.grok_read_timeout_seconds)
    cutoff = queries.utcnow() - timedelta(seconds=lease)
    claimed_before = cutoff - timedelta(seconds=call_bound)
    while stale := claims.reclaim_stale(cutoff, claimed_before, lanes):  # the bulk lane keeps its own (actors.bulk)
        send_for_batching(stale)
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
                call_and_release(reconcile_once)  # a connection the database dropped is not kept
                call_and_release(idempotency.forget_expired, queries.utcnow())
                call_and_release(workers.forget_lapsed)
            except Exception:  # Redis or the database away: try again next round
                logger.exception("reconciler round failed")
            self.stopped.wait(settings().reconcile_interval_seconds)

    def stop(self) -> None:
        self.stopped.set()
