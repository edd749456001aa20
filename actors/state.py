"""What is waiting where: Dramatiq's queues, the batching stream, conversations in the database.

Read by ``insights stats`` and, at every scrape, by the web process's ``/metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.batching import GROUP, STREAM
from actors.broker import broker, redis_client
from store import queries

NAMESPACE = "dramatiq"


@dataclass
class PipelineState:
    queues: dict[tuple[str, str], int]  # (queue, "waiting" | "delayed" | "dead") -> messages
    stream: int  # entries in the batching stream
    stream_pending: int  # entries read by a cutter but not yet dispatched
    by_status: dict[str, int]
    oldest_waiting_seconds: float  # 0 when nothing waits
    oldest_waiting: object  # naive-UTC datetime of the oldest open conversation, or None


def read_state() -> PipelineState:
    client = redis_client()
    queues = {}
    for queue in sorted(broker.get_declared_queues()):
        queues[(queue, "waiting")] = client.hlen(f"{NAMESPACE}:{queue}.msgs")
        queues[(queue, "delayed")] = client.hlen(f"{NAMESPACE}:{queue}.DQ.msgs")
        queues[(queue, "dead")] = client.zcard(f"{NAMESPACE}:{queue}.XQ")
    exists = client.exists(STREAM)
    stats = queries.stats()
    age = (queries.utcnow() - stats.oldest_waiting).total_seconds() if stats.oldest_waiting else 0.0
    return PipelineState(
        queues=queues,
        stream=client.xlen(STREAM) if exists else 0,
        stream_pending=client.xpending(STREAM, GROUP)["pending"] if exists else 0,
        by_status=stats.by_status,
        oldest_waiting_seconds=max(0.0, age),
        oldest_waiting=stats.oldest_waiting,
    )
