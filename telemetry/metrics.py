"""Prometheus metrics.

- **Web** (``GET /metrics``): requests by route, method and status, their latency, accepted and
  rate-limited conversations, and, read at scrape time from Redis and the database, queue, stream and
  dead-letter depths, conversations by status, the age of the oldest waiting one and the personal data
  masked by kind (``insights_pii_masked_total``, every worker's, kept in Redis). With several
  uvicorn workers (``WEB_CONCURRENCY``) they share counters through ``PROMETHEUS_MULTIPROC_DIR``
  (``scripts/web`` sets and empties it), so any one of them answers for all.
- **Workers**: Dramatiq's own Prometheus middleware serves every worker process's metrics on one port per
  ``dramatiq`` command (``dramatiq_prom_port``, default 9191), its message, retry and error counters beside
  ours: batch sizes, Grok call latency and outcomes, tokens used, settled conversations, ids received
  that the worker's database does not hold, and webhook requests by outcome, their latency and the events
  delivered.

``prometheus_client`` is imported lazily: a worker process must not import it before Dramatiq's
middleware has switched it to multiprocess mode, or its metrics would stay private to the process.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
GROK_STATES = ("available", "paused", "misconfigured", "credits_exhausted")
# What the operator must do in each state that needs a person, named in the help of insights_grok_state.
GROK_STATE_HELP = (
    "1 for Grok's current state as the workers see it (the reason: /readyz, insights stats). "
    "misconfigured: fix GROK_API_KEY, GROK_MODEL or GROK_BASE_URL; credits_exhausted: purchase "
    "credits or raise the spending limit at console.x.ai"
)
GROK_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


def registered_once(build: Callable[[], SimpleNamespace]) -> Callable[[], SimpleNamespace]:
    """``build``'s metrics, registered by the first call only. ``functools.cache`` alone lets the first
    calls of two worker threads both build them, and the second registration raises (its batch unstored)."""
    cached = functools.cache(build)
    lock = threading.Lock()

    @functools.wraps(build)
    def get() -> SimpleNamespace:
        with lock:
            return cached()

    return get


@registered_once
def web() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        requests=Counter("insights_http_requests_total", "HTTP requests answered", ["route", "method", "status"]),
        latency=Histogram("insights_http_request_seconds", "HTTP request latency", ["route"], buckets=LATENCY_BUCKETS),
        accepted=Counter("insights_conversations_accepted_total", "Conversations accepted (committed as queued)"),
        rate_limited=Counter("insights_conversations_rate_limited_total", "Conversations refused by the inbound limit"),
    )


@registered_once
def worker() -> SimpleNamespace:
    from prometheus_client import Counter, Histogram

    return SimpleNamespace(
        batch_size=Histogram(
            "insights_batch_conversations",
            "Conversations per analysis call",
            buckets=(1, 2, 5, 10, 15, 20, 30, 50, 100),
        ),
        grok_latency=Histogram("insights_grok_call_seconds", "Grok call latency", buckets=GROK_BUCKETS),
        grok_calls=Counter("insights_grok_calls_total", "Grok calls by outcome", ["outcome"]),
        tokens=Counter("insights_grok_tokens_total", "Tokens reported by Grok", ["kind"]),
        settled=Counter("insights_conversations_settled_total", "Analysis outcomes per conversation", ["outcome"]),
        unknown=Counter(
            "insights_conversations_unknown_total",
            "Conversation ids received that this worker's database does not hold (dropped)",
        ),
        webhook_requests=Counter(
            "insights_webhook_requests_total",
            "Webhook requests by outcome (delivered, retry, dead, gone)",
            ["outcome"],
        ),
        webhook_events=Counter("insights_webhook_events_delivered_total", "Webhook events delivered"),
        webhook_latency=Histogram(
            "insights_webhook_request_seconds", "Webhook request latency", buckets=LATENCY_BUCKETS
        ),
    )


class StateCollector:
    """Gauges read at scrape time (``actors.state.read_state``): what waits where, conversations by status."""

    def __init__(self, read_state: Callable[[], Any]) -> None:
        self.read_state = read_state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        state = self.read_state()
        for source in ("redis", "database"):
            yield GaugeMetricFamily(
                f"insights_{source}_up",
                f"1 when {source} answered this scrape, else 0 (its gauges are left out)",
                value=0 if source in state.errors else 1,
            )
        if state.redis is not None:
            yield from self.of_redis(state.redis)
        if state.stats is not None:
            yield from self.of_database(state)

    @staticmethod
    def of_redis(redis_state: Any) -> Iterator[Any]:
        """What waits in Redis, Grok's state and the tallies every worker keeps there."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield labelled(
            GaugeMetricFamily,
            "insights_queue_messages",
            "Dramatiq messages by queue and state",
            ["queue", "state"],
            redis_state.queues,
        )
        yield GaugeMetricFamily(
            "insights_stream_entries", "Conversation ids waiting in the batching stream", value=redis_state.stream
        )
        states = {name: 1 if redis_state.grok.state == name else 0 for name in GROK_STATES}
        yield labelled(GaugeMetricFamily, "insights_grok_state", GROK_STATE_HELP, ["state"], states)
        yield labelled(
            GaugeMetricFamily,
            "insights_grok_answers_by_another_model",
            "Answers by a model other than GROK_MODEL (a retired slug is served by its successor)",
            ["asked", "answered"],
            redis_state.answered_by,
        )
        yield labelled(
            CounterMetricFamily,
            "insights_pii_masked",
            "Personal data items masked before analysis, by kind (EMAIL, PHONE, CARD...), every worker's",
            ["kind"],
            redis_state.masked,
        )
        yield GaugeMetricFamily(
            "insights_grok_pause_seconds",
            "Seconds until Grok's pause or misconfiguration ends",
            value=redis_state.grok.seconds_left,
        )

    @staticmethod
    def of_database(state: Any) -> Iterator[Any]:
        """Conversations by status and lane, and the bulk lane's provider batches, as the database has them."""
        from prometheus_client.core import GaugeMetricFamily

        stats = state.stats
        yield labelled(
            GaugeMetricFamily, "insights_conversations", "Conversations by status", ["status"], stats.by_status
        )
        yield GaugeMetricFamily(
            "insights_oldest_waiting_seconds",
            "Age of the oldest queued or processing conversation",
            value=state.oldest_waiting_seconds,
        )
        yield labelled(
            GaugeMetricFamily,
            "insights_bulk_conversations",
            "The bulk lane's conversations: queued for a provider batch, processing in one",
            ["status"],
            stats.bulk,
        )
        yield labelled(
            GaugeMetricFamily,
            "insights_provider_batches",
            "The bulk lane's provider batches by state",
            ["state"],
            stats.provider_batches,
        )
        yield labelled(
            GaugeMetricFamily,
            "insights_webhook_deliveries",
            "The webhooks' outbox by status: pending, delivered (kept WEBHOOK_RETENTION_DAYS), failed (dead letters)",
            ["status"],
            stats.webhook_deliveries,
        )


def labelled(family: type, name: str, documentation: str, labels: list[str], counts: Mapping[Any, float]) -> Any:
    """A metric family with a sample per key of ``counts`` (a tuple of label values when there are several)."""
    metric = family(name, documentation, labels=labels)
    for key, count in counts.items():
        metric.add_metric(list(key) if isinstance(key, tuple) else [key], count)
    return metric


class _Everything:
    """Yields what a registry holds, so a per-scrape registry can include the process-wide one."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def exposition(read_state: Callable[[], Any]) -> tuple[bytes, str]:
    """The web process's metrics (every uvicorn worker's, in multiprocess mode) and their content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Everything(REGISTRY))
    registry.register(StateCollector(read_state))
    return generate_latest(registry), CONTENT_TYPE_LATEST
