"""The Dramatiq broker over Redis, set as the global broker before any actor is declared."""

from __future__ import annotations

import functools
import json

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from insights.outbound import OutboundGate
from settings import settings_or_exit
from store.models import LANES, REALTIME

REDIS_CONNECTIONS = 50  # per pool and process; a thread needing one waits for a free one (hundreds of threads)
REDIS_WAIT_SECONDS = 30


def redis_pool() -> redis.BlockingConnectionPool:
    """Connections to ``REDIS_URL`` for one process: bounded, and a thread waits for a free one rather than
    failing (redis-py's default pool refuses the 101st at once, and a worker runs hundreds of threads)."""
    return redis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_CONNECTIONS, timeout=REDIS_WAIT_SECONDS,
        health_check_interval=30, socket_connect_timeout=5, socket_timeout=30,
    )


settings = settings_or_exit()
STREAMED_LANES = LANES if settings.offline else (REALTIME,)
"""The lanes whose conversations travel through the batching stream and ``analyze_batch``. The bulk lane
goes through xAI's Batch API (``actors.bulk``); without a Grok key there is none, so it takes the stream."""
ANALYZE_QUEUE = "analyze"
AGAIN_QUEUE = "analyze-again"
"""Batches sent again (a dead worker's, a retry, the halves of a split, a call given back at shutdown) wait
here, not behind a backlog on ``analyze``: every worker consumes both queues at once, so a batch that has
had its turn once is not made to wait for the whole backlog a second time."""
broker = RedisBroker(connection_pool=redis_pool(), namespace=settings.redis_namespace)
broker.declare_queue(AGAIN_QUEUE)
dramatiq.set_broker(broker)


def send_batch(conversation_ids: list[str], delay_ms: int | None = None, retries: int = 0,
               message_id: str | None = None, queue: str = ANALYZE_QUEUE) -> None:
    """Enqueue an ``analyze_batch`` message on ``queue`` (after ``delay_ms``), its ``retries`` so far in
    Dramatiq's own option, under ``message_id`` when it is a retry of that one. Sent by name, so that what
    cuts, retries or splits batches need not import the actor."""
    options = {"retries": retries} if retries else {}
    message = dramatiq.Message(queue_name=queue, actor_name="analyze_batch", args=(conversation_ids,), kwargs={},
                               options=options, **({"message_id": message_id} if message_id else {}))
    broker.enqueue(message, delay=delay_ms)


def dead_letter(message: dict, traceback: str) -> None:
    """Put a message on its queue's dead letters as Dramatiq's Redis broker does when it gives up on one
    (``insights dlq`` lists and requeues them), with the ``traceback`` of its last try. A batch's letter lies
    on ``analyze``, whichever queue its last try came from (a retry comes from ``analyze-again``)."""
    message = {**message, "options": {**message.get("options", {}), "traceback": traceback}}
    letter_id = message["options"].get("redis_message_id") or message["message_id"]
    queue = ANALYZE_QUEUE if message["actor_name"] == "analyze_batch" else message["queue_name"].removesuffix(".DQ")
    seconds, micros = redis_client().time()
    pipe = redis_client().pipeline()
    pipe.zadd(queue_key(queue, "XQ"), {letter_id: seconds * 1000 + micros // 1000})
    pipe.hset(queue_key(queue, "XQ.msgs"), letter_id, json.dumps(message))
    pipe.execute()


def queue_key(queue: str, suffix: str) -> str:
    """The Redis key of a Dramatiq queue's ``suffix`` (``msgs``, ``DQ.msgs``, ``XQ``, ``XQ.msgs``) under this
    deployment's ``REDIS_NAMESPACE``."""
    return f"{broker.namespace}:{queue}.{suffix}"


@functools.cache
def redis_client() -> redis.Redis:
    """This process's client for the batching stream, locks and the outbound gate (thread-safe, pooled)."""
    return redis.Redis(connection_pool=redis_pool())


# The longest a call waits for its slot: a thread may hold its claimed batch that long (well within a lease).
GATE_MAX_WAIT_SECONDS = min(60.0, settings.requeue_seconds / 4)
gate = OutboundGate(redis_client(), settings.outbound_rps, settings.outbound_tpm, max_wait=GATE_MAX_WAIT_SECONDS,
                    namespace=settings.redis_namespace)
