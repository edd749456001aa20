"""Batching: conversation ids wait in a Redis Stream until a batch is cut.

Accepted conversations arrive as ``collect_many`` messages (up to ``actors.broker.COLLECT_CHUNK`` ids each; ``collect``
carries one), which append their ids to the stream. A batch
is cut when ``BATCH_SIZE`` ids wait or the oldest has waited ``BATCH_FLUSH_SECONDS`` (a delayed
``flush_batches`` message makes sure someone looks then). Cutting reads the ids through a consumer group,
enqueues the batch's pipeline and only then acknowledges and deletes the entries: a process that dies in
between leaves them pending, and the next cutter claims them back once they have been idle too long.
One cutter at a time (a Redis lock), so batches are full whenever there are enough ids.
"""

from __future__ import annotations

import logging
import os
import socket

import dramatiq
import redis

from actors.broker import COLLECT_QUEUE, GROUP, redis_client, send, send_batch, settings, stream_key, streamed_lanes
from settings import Settings
from store import queries
from store.db import describe
from telemetry import metrics
from telemetry.logs import Throttle

# Entries read but not acknowledged for this long belong to a cutter that died mid-cut.
CLAIM_IDLE_MS = 30_000
CONSUMER = f"{socket.gethostname()}-{os.getpid()}"

logger = logging.getLogger(__name__)


COLLECT_PRIORITY = 10  # after analysis (0): a burst of arrivals does not hold calls back


def cutter_lock_key() -> str:
    return f"{settings().redis_namespace}:cutter-lock"


def flush_scheduled_key() -> str:
    return f"{settings().redis_namespace}:flush-scheduled"


def declare(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare this module's actors on ``broker`` (the worker's set-up, ``actors.worker``)."""
    for collector in (collect, collect_many):
        dramatiq.actor(
            collector,
            queue_name=COLLECT_QUEUE,
            priority=COLLECT_PRIORITY,
            max_retries=settings.max_retries,
            broker=broker,
        )
    dramatiq.actor(flush_batches, queue_name=COLLECT_QUEUE, max_retries=settings.max_retries, broker=broker)


def collect(conversation_id: str) -> None:
    """Actor: add one accepted conversation to the batching stream and cut any batch that is ready."""
    add_to_stream([conversation_id])


def collect_many(conversation_ids: list[str]) -> None:
    """Actor: ``collect`` for many at once (bulk imports, reprocessing): one message, one Redis round trip."""
    add_to_stream(conversation_ids)


UNKNOWN_LOG_SECONDS = 60.0
_unknown_lines = Throttle(UNKNOWN_LOG_SECONDS)


def report_unknown(missing: list[str]) -> None:
    """Ids this worker's database does not hold: sent by a process on another database (a mistyped
    ``DB_PATH`` or ``DATABASE_URL``), or deleted since. Dropped, counted, and said at most once a minute."""
    metrics.worker().unknown.inc(len(missing))
    if count := _unknown_lines.due(len(missing)):
        logger.warning(
            "collect: %d conversation id(s) not in this worker's database (%s), dropped, e.g. %s; do the "
            "processes that send them use the same DB_PATH or DATABASE_URL? (insights_conversations_unknown_total "
            "counts them; this line comes at most once every %.0f s)",
            count,
            describe(settings()),
            ", ".join(missing[:3]),
            UNKNOWN_LOG_SECONDS,
        )


def add_to_stream(conversation_ids: list[str]) -> None:
    found = queries.payload_chars(conversation_ids)
    if missing := [i for i in conversation_ids if i not in found]:
        report_unknown(missing)
    # The bulk lane's are left to it: it finds them in the database (actors.bulk).
    lanes = streamed_lanes(settings())
    sizes = {i: chars for i, (chars, lane) in found.items() if lane in lanes}
    client = redis_client()
    pipe = client.pipeline(transaction=False)
    for conversation_id in conversation_ids:
        if conversation_id in sizes:
            pipe.xadd(stream_key(), {"id": conversation_id, "tokens": estimate_tokens(sizes[conversation_id])})
    pipe.execute()
    cut_ready_batches(client)
    schedule_flush(client)


def flush_batches() -> None:
    """Actor: cut the batches whose oldest id has waited long enough; look again later if ids remain."""
    client = redis_client()
    client.delete(flush_scheduled_key())
    if cut_ready_batches(client):
        schedule_flush(client)


def schedule_flush(client: redis.Redis) -> None:
    """Make sure one delayed ``flush_batches`` is on its way (at most one at a time)."""
    delay_ms = int(settings().batch_flush_seconds * 1000)
    if client.set(flush_scheduled_key(), 1, nx=True, px=delay_ms * 2):
        send("flush_batches", COLLECT_QUEUE, delay_ms=delay_ms)


def estimate_tokens(chars: int) -> int:
    """About four characters a token for English text, plus the JSON around each message."""
    return chars // 4 + 16


def batch_length(waiting: list[tuple[bytes, dict]]) -> int:
    """How many of the waiting entries (oldest first) one batch takes: up to ``BATCH_SIZE``, and no more
    than fit in ``MAX_BATCH_TOKENS`` (but always at least one, however long)."""
    batch_size, max_tokens = settings().batch_size, settings().max_batch_tokens
    total = 0
    for count, (_entry_id, fields) in enumerate(waiting[:batch_size]):
        total += int(fields.get(b"tokens", 0))
        if total > max_tokens:
            return max(1, count)
    return min(len(waiting), batch_size)


def cut_ready_batches(client: redis.Redis) -> int:
    """Dispatch every ready batch; return how many ids are left waiting (-1: unknown, another cutter is
    at work and will see them, or the scheduled flush will).

    A batch is ready when it is full (by count or by tokens) or its oldest entry has waited
    ``BATCH_FLUSH_SECONDS``. Nobody waits for the lock: with hundreds of worker threads collecting at
    once, waiting would only keep them (and Redis) busy.
    """
    lock = client.lock(cutter_lock_key(), timeout=60)
    if not lock.acquire(blocking=False):
        return -1
    try:
        _ensure_group(client)
        _dispatch_abandoned(client)
        while True:
            waiting = _undelivered(client)
            if not waiting:
                return 0
            length = batch_length(waiting)
            full = length == settings().batch_size or length < len(waiting)
            if not full and _age_ms(client, waiting[0][0]) < settings().batch_flush_seconds * 1000:
                return len(waiting)
            entries = client.xreadgroup(GROUP, CONSUMER, {stream_key(): ">"}, count=length)
            for _stream, batch in entries:
                _dispatch(client, batch)
    finally:
        lock.release()


def _ensure_group(client: redis.Redis) -> None:
    """Create the stream and its group if missing (first use, or after Redis lost everything)."""
    try:
        client.xgroup_create(stream_key(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _undelivered(client: redis.Redis) -> list[tuple[bytes, dict]]:
    """Up to a batch and one more of the entries the group has not delivered yet, oldest first."""
    groups = {g["name"].decode(): g for g in client.xinfo_groups(stream_key())}
    last = groups[GROUP]["last-delivered-id"].decode()
    return client.xrange(stream_key(), min=f"({last}", count=settings().batch_size + 1)


def _age_ms(client: redis.Redis, entry_id: bytes) -> float:
    seconds, micros = client.time()
    return seconds * 1000 + micros / 1000 - int(entry_id.split(b"-")[0])


def _dispatch_abandoned(client: redis.Redis) -> None:
    """Re-dispatch entries that a dead cutter read but never acknowledged."""
    # Redis 7 answers [next, claimed, deleted], Redis 6.2 (the embedded one) [next, claimed].
    claimed = client.xautoclaim(
        stream_key(), GROUP, CONSUMER, min_idle_time=CLAIM_IDLE_MS, count=settings().batch_size
    )[1]
    if claimed:
        logger.warning("claimed back %d abandoned stream entries", len(claimed))
        _dispatch(client, claimed)


def _dispatch(client: redis.Redis, entries: list[tuple[bytes, dict]]) -> None:
    """Enqueue the batch's pipeline, then acknowledge and delete its entries."""
    entry_ids = [entry_id for entry_id, _fields in entries]
    send_batch([fields[b"id"].decode() for _id, fields in entries])
    client.xack(stream_key(), GROUP, *entry_ids)
    client.xdel(stream_key(), *entry_ids)
