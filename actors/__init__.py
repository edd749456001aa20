"""Dramatiq actors; ``dramatiq actors`` runs them (the Procfile's ``worker``).

Importing this package sets up the Redis broker, declares every actor and adds the worker's start-up
hook: open and migrate the database, check the analyzer, start the call engine (which holds the worker's
lease), the reconciler and, with a Grok key, the bulk lane.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.middleware.prometheus import Prometheus

from actors.broker import broker, settings
from actors.batching import collect, collect_many, flush_batches
from actors.analysis import STOP_GRACE_SECONDS, analyze_batch, analyzer, batch_exhausted, engine, store_results
from actors.bulk import BulkLane
from actors.reconciler import Reconciler
from insights.models import retirement_warning
from telemetry.logs import configure_logging
from store.db import describe, open_database, release
from store.migrations import migrate

logger = logging.getLogger(__name__)


class WorkerLifecycle(Middleware):
    """Prepares each worker process before it consumes, and stops its background threads on shutdown."""

    def __init__(self) -> None:
        self.threads: list[Reconciler | BulkLane] = []

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        configure_logging(settings)
        migrate(open_database(settings))
        active = analyzer()
        logger.info("worker ready: %s, analyzer %s, batches of %d", describe(settings), active.model, settings.batch_size)
        if not settings.offline and (retired := retirement_warning(settings)):
            logger.warning("%s", retired)
        engine().start()
        self.threads = [Reconciler()] if settings.offline else [Reconciler(), BulkLane()]
        for thread in self.threads:
            thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for thread in self.threads:
            thread.stop()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        engine().stop(STOP_GRACE_SECONDS)  # once no thread can hand it a call any more

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *, result=None, exception=None) -> None:
        release()  # a thread waiting for its next message holds no database connection

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        release()


broker.add_middleware(WorkerLifecycle())
broker.add_middleware(CurrentMessage())  # lets log records name their batch
broker.add_middleware(Prometheus())  # serves every worker process's metrics, ours included

__all__ = ["broker", "collect", "collect_many", "flush_batches", "analyze_batch", "store_results", "batch_exhausted"]
