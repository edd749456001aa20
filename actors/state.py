"""What is waiting where: Dramatiq's queues, the batching stream, conversations in the database.

Read by ``insights stats`` and, at every scrape, by the web process's ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.broker import GROUP, gate, get_broker, queue_key, redis_client, settings, stream_key
from insights.models import ModelWatch
from insights.outbound import GrokState
from insights.pii.counts import MaskedCounts
from store import reports


@dataclass
class RedisState:
    queues: dict[tuple[str, str], int]  # (queue, "waiting" | "delayed" | "dead") -> messages
    stream: int  # entries in the batching stream
    stream_pending: int  # entries read by a cutter but not yet dispatched
    grok: GrokState  # whether workers may call Grok now, and if not why
    answered_by: dict[tuple[str, str], int]  # (GROK_MODEL, another model that answered) -> answers (insights.models)
    masked: dict[str, int]  # personal data masked before analysis, by kind (insights.pii.counts)


@dataclass
class PipelineState:
    """What waits where; a part whose source is not answering is ``None`` (and says why in ``errors``)."""

    redis: RedisState | None
    stats: reports.Stats | None
    errors: dict[str, str]  # "redis" | "database" -> what went wrong

    @property
    def oldest_waiting_seconds(self) -> float:
        """How long the longest current wait has lasted (0 when nothing waits or the database is not answering)."""
        return reports.seconds_since(self.stats.oldest_waiting if self.stats else None)


def read_redis_state() -> RedisState:
    client = redis_client()
    queues = {}
    for queue in sorted(get_broker().get_declared_queues()):
        queues[(queue, "waiting")] = client.hlen(queue_key(queue, "msgs"))
        queues[(queue, "delayed")] = client.hlen(queue_key(queue, "DQ.msgs"))
        queues[(queue, "dead")] = client.zcard(queue_key(queue, "XQ"))
    stream = stream_key()
    exists = client.exists(stream)
    return RedisState(
        queues=queues,
        stream=client.xlen(stream) if exists else 0,
        stream_pending=client.xpending(stream, GROUP)["pending"] if exists else 0,
        grok=gate().state(),
        answered_by=ModelWatch(client, settings()).seen(),
        masked=MaskedCounts(client, settings()).read(),
    )


def read_state() -> PipelineState:
    """Read Redis and the database independently: monitoring must not go blind on the one when the other
    is down (which is exactly when it is needed)."""
    errors = {}
    redis_state = stats = None
    try:
        redis_state = read_redis_state()
    except Exception as error:
        errors["redis"] = failure(error)
    try:
        stats = reports.stats()
    except Exception as error:
        errors["database"] = failure(error)
    return PipelineState(redis=redis_state, stats=stats, errors=errors)


def failure(error: Exception) -> str:
    """``error`` in one line: its class and :func:`first_line`."""
    return f"{type(error).__name__}: {first_line(error)}"


def first_line(error: Exception) -> str:
    """The first line of ``error``'s text (psycopg2 adds hints on further lines), else its class."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
