"""The Dramatiq broker over Redis and this process's other ways to Redis, built when first needed.

Importing this module builds nothing. A process's entry point calls :func:`setup` with its settings (the
worker's ``actors.worker.setup``, the web's ``api.middleware.Lifespan``): it builds the broker and makes it
Dramatiq's global one, as ``dramatiq.set_broker`` does. Anything used before that (the CLI, a test in
process) is set up from the environment's settings on first use, as Dramatiq's ``get_broker()`` makes its
default broker: :func:`settings`, :func:`redis_client`, :func:`gate` and :func:`get_broker` are those
accessors.

Messages are sent by actor name (:func:`send`), so that a process that sends them (the web, the CLI) needs
none of the actors' declarations, which only the worker makes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.backoff import NoBackoff
from redis.retry import Retry

from insights.outbound import OutboundGate
from settings import Settings, settings_or_exit
from store.models import LANES, REALTIME

REDIS_CONNECTIONS = 50  # per pool and process; a thread needing one waits for a free one (hundreds of threads)
REDIS_WAIT_SECONDS = 30
LOOP_REDIS_TIMEOUT_SECONDS = 1.0  # the longest a loop waits on Redis for one command
COLLECT_QUEUE = "collect"
ANALYZE_QUEUE = "analyze"
AGAIN_QUEUE = "analyze-again"
"""Batches sent again (a dead worker's, a retry, the halves of a split, a call given back at shutdown) wait
here, not behind a backlog on ``analyze``: every worker consumes both queues at once, so a batch that has
had its turn once is not made to wait for the whole backlog a second time."""
STORE_QUEUE = "store"
WEBHOOK_QUEUE = "webhooks"  # deliveries to receivers (actors.webhooks): never in analysis's way
QUEUES = (COLLECT_QUEUE, ANALYZE_QUEUE, AGAIN_QUEUE, STORE_QUEUE, WEBHOOK_QUEUE)
COLLECT_CHUNK = 1000  # conversations a collect_many message carries
GROUP = "batchers"  # the batching stream's consumer group


def streamed_lanes(settings: Settings) -> tuple[str, ...]:
    """The lanes whose conversations travel through the batching stream and ``analyze_batch``. The bulk lane
    goes through xAI's Batch API (``actors.bulk``); without a Grok key there is none, so it takes the stream."""
    return LANES if settings.offline else (REALTIME,)


def gate_max_wait_seconds(settings: Settings) -> float:
    """The longest a call waits for its slot: a thread may hold its claimed batch that long (well within a lease)."""
    return min(60.0, settings.requeue_seconds / 4)


def redis_pool(settings: Settings) -> redis.BlockingConnectionPool:
    """Connections to ``REDIS_URL`` for one process: bounded, and a thread waits for a free one rather than
    failing (redis-py's default pool refuses the 101st at once, and a worker runs hundreds of threads)."""
    return redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_WAIT_SECONDS,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=30,
    )


def loop_redis_pool(settings: Settings) -> redis.ConnectionPool:
    """Connections for the calls an event loop makes itself (a call's start, a webhook's last word): no
    retry and short timeouts. redis-py retries a failed command three times with backoff (about 4 s), and
    a loop held that long per call, with Redis away, holds every call in flight and its worker's lease."""
    return redis.ConnectionPool.from_url(
        settings.redis_url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=LOOP_REDIS_TIMEOUT_SECONDS,
        socket_timeout=LOOP_REDIS_TIMEOUT_SECONDS,
    )


class Connections:
    """One process's ways to Redis, from its settings, each made on first use (none connects until used)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @functools.cached_property
    def broker(self) -> RedisBroker:
        """Dramatiq's broker, with every queue the actors use declared (``insights dlq`` and ``stats`` list them)."""
        broker = RedisBroker(connection_pool=redis_pool(self.settings), namespace=self.settings.redis_namespace)
        for queue in QUEUES:
            broker.declare_queue(queue)
        return broker

    @functools.cached_property
    def redis(self) -> redis.Redis:
        """The client for the batching stream, locks and the outbound gate (thread-safe, pooled)."""
        return redis.Redis(connection_pool=redis_pool(self.settings))

    @functools.cached_property
    def loop_redis(self) -> redis.Redis:
        """The client for what an event loop asks Redis itself (:func:`loop_redis_pool`)."""
        return redis.Redis(connection_pool=loop_redis_pool(self.settings))

    @functools.cached_property
    def gate(self) -> OutboundGate:
        """The outbound gate every worker process shares through Redis."""
        settings = self.settings
        return OutboundGate(
            self.redis,
            settings.outbound_rps,
            settings.outbound_tpm,
            max_wait=gate_max_wait_seconds(settings),
            margin_ms=settings.rate_margin_ms,
            namespace=settings.redis_namespace,
            loop_client=self.loop_redis,
        )


_current: Connections | None = None


def setup(settings: Settings) -> RedisBroker:
    """Make ``settings`` this process's: its broker (set as Dramatiq's global broker), Redis client and gate
    are built from them. Called by the entry point, before any actor is declared or message sent."""
    global _current
    _current = Connections(settings)
    dramatiq.set_broker(_current.broker)
    return _current.broker


def connections() -> Connections:
    """This process's connections: those :func:`setup` made, else set up now from the environment."""
    if _current is None:
        setup(settings_or_exit())
    assert _current is not None
    return _current


def settings() -> Settings:
    """This process's settings (see :func:`connections`)."""
    return connections().settings


def get_broker() -> RedisBroker:
    """This process's broker (see :func:`connections`)."""
    return connections().broker


def redis_client() -> redis.Redis:
    """This process's client for the batching stream, locks and the outbound gate."""
    return connections().redis


def loop_redis_client() -> redis.Redis:
    """This process's client for the calls its event loops make (see :func:`loop_redis_pool`)."""
    return connections().loop_redis


def gate() -> OutboundGate:
    """This process's outbound gate."""
    return connections().gate


def send(
    actor_name: str,
    queue: str,
    *args: Any,
    delay_ms: int | None = None,
    options: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> None:
    """Enqueue a message for ``actor_name`` on ``queue`` (after ``delay_ms``), as its actor's ``send`` would,
    without the actor being declared in this process."""
    message = dramatiq.Message(
        queue_name=queue,
        actor_name=actor_name,
        args=args,
        kwargs={},
        options=options or {},
        **({"message_id": message_id} if message_id else {}),
    )
    get_broker().enqueue(message, delay=delay_ms)


def send_batch(
    conversation_ids: list[str],
    delay_ms: int | None = None,
    retries: int = 0,
    message_id: str | None = None,
    queue: str = ANALYZE_QUEUE,
) -> None:
    """Enqueue an ``analyze_batch`` message on ``queue`` (after ``delay_ms``), its ``retries`` so far in
    Dramatiq's own option, under ``message_id`` when it is a retry of that one."""
    send(
        "analyze_batch",
        queue,
        conversation_ids,
        delay_ms=delay_ms,
        options={"retries": retries} if retries else None,
        message_id=message_id,
    )


def send_for_batching(conversation_ids: list[str]) -> None:
    """Send conversations to the batching stream (``collect_many``), ``COLLECT_CHUNK`` to a message."""
    for start in range(0, len(conversation_ids), COLLECT_CHUNK):
        send("collect_many", COLLECT_QUEUE, conversation_ids[start : start + COLLECT_CHUNK])


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


def stream_key() -> str:
    """The batching stream's key under ``REDIS_NAMESPACE``: ``actors.batching`` cuts batches from it through the
    consumer group ``GROUP``; ``actors.state`` and the reconciler read its depth."""
    return f"{settings().redis_namespace}:pending"


def queue_key(queue: str, suffix: str) -> str:
    """The Redis key of a Dramatiq queue's ``suffix`` (``msgs``, ``DQ.msgs``, ``XQ``, ``XQ.msgs``) under this
    deployment's ``REDIS_NAMESPACE``."""
    return f"{settings().redis_namespace}:{queue}.{suffix}"
