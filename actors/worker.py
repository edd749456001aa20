"""The worker's wiring: what ``dramatiq actors.worker:setup`` (``actors.launch``) calls in every worker
process before it consumes.

:func:`setup` reads the settings, sets up the broker, adds the worker's middleware and declares the actors
(retried as the settings say). Its boot hook (:class:`WorkerLifecycle`) opens and migrates the database,
checks the analyzer, starts the call engine (which holds the worker's lease), the webhooks' engine and
dispatcher, the reconciler and, with a Grok key, the bulk lane.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware
from dramatiq.middleware.prometheus import Prometheus

from actors import analysis, batching, broker, webhooks
from actors.bulk import BulkLane
from actors.reconciler import Reconciler
from insights.models import retirement_warning
from settings import Settings, settings_or_exit
from store.db import describe, open_database, release
from store.migrations import migrate
from telemetry.logs import configure_logging

logger = logging.getLogger(__name__)


class WorkerLifecycle(Middleware):
    """Prepares each worker process before it consumes, and stops its background threads on shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.threads: list[Reconciler | BulkLane | webhooks.Dispatcher] = []

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        settings = self.settings
        configure_logging(settings)
        migrate(open_database(settings))
        active = analysis.analyzer()
        logger.info(
            "worker ready: %s, analyzer %s, batches of %d", describe(settings), active.model, settings.batch_size
        )
        if not settings.offline and (retired := retirement_warning(settings)):
            logger.warning("%s", retired)
        analysis.engine().start()
        webhooks.engine().start()
        self.threads = [Reconciler(), webhooks.Dispatcher()] + ([] if settings.offline else [BulkLane()])
        for thread in self.threads:
            thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for thread in self.threads:
            thread.stop()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        analysis.engine().stop(analysis.STOP_GRACE_SECONDS)  # once no thread can hand it a call any more
        webhooks.engine().stop(analysis.STOP_GRACE_SECONDS)

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.Message, *, result=None, exception=None
    ) -> None:
        release()  # a thread waiting for its next message holds no database connection

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        release()


def setup() -> None:
    """Dramatiq's CLI calls this first (``dramatiq actors.worker:setup``): a bad configuration stops the
    process with its one-line reason; then the broker, the middleware and the actors."""
    settings = settings_or_exit()
    dramatiq_broker = broker.setup(settings)
    dramatiq_broker.add_middleware(WorkerLifecycle(settings))
    dramatiq_broker.add_middleware(CurrentMessage())  # lets log records name their batch
    dramatiq_broker.add_middleware(Prometheus())  # serves every worker process's metrics, ours included
    batching.declare(dramatiq_broker, settings)
    analysis.declare(dramatiq_broker, settings)
    webhooks.declare(dramatiq_broker, settings)
