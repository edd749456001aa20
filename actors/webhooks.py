"""Webhook deliveries: ``deliver_webhook`` on its own queue, and the dispatcher that feeds it.

- The **dispatcher** (a thread in each worker process, :class:`Dispatcher`) looks for due deliveries every
  ``WEBHOOK_DISPATCH_SECONDS``. For each enabled subscription it claims what its pace lets it send within
  ``HORIZON_SECONDS`` (``webhooks.pacing``: ``WEBHOOK_RPS`` per subscription, shared in Redis), cuts it into
  requests of the subscription's ``batch_size`` events, books each request's slot and sends its
  ``deliver_webhook`` message at once, naming the slot. It claims nothing while ``QUEUE_LIMIT`` messages
  wait on the queue: the workers are behind, and what they have not taken must not outlive its lease.
- ``deliver_webhook`` (queue ``webhooks``) reads the request's deliveries still under its claim, signs the
  request and hands it to this process's webhook engine (``actors.calls.CallEngine``, without a worker
  lease). If the engine stays full for ``ROOM_WAIT_SECONDS`` (``WEBHOOK_IN_FLIGHT`` requests open, or its loop
  more than ``MAX_LOOP_LAG`` behind: the process has no CPU for more), it gives them back for
  ``FULL_SECONDS`` and has every dispatcher hold off as long: it never waits longer, so it never holds a
  thread that analysis needs.
  On the engine the request sleeps until its slot (a timer, not a thread, and no connection held), then
  waits for its receiver as a coroutine. A finishing thread records the outcome (``store.deliveries``):
  delivered on any ``2xx``; ``410 Gone`` disables the subscription; ``429`` also holds the subscription for
  its ``Retry-After`` (no request to it until then, and the failed ones not before); anything else (another
  status, no answer in time, a refused address, a redirect, which is never followed) is tried again on the
  retry schedule, then dead-lettered.

Nothing is lost: a claim is a lease in the database, so a delivery whose message Redis lost, or whose worker
died, is due again when the lease ends. A delivery may so arrive twice; receivers de-duplicate by event id.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import dramatiq
import httpx
import redis

from actors.broker import WEBHOOK_QUEUE, loop_redis_client, queue_key, redis_client, send, settings
from actors.calls import CallEngine, Job
from insights.refusals import parse_retry_after
from settings import Settings
from store import deliveries, subscriptions
from store.db import call_and_release, release
from store.queries import utcnow
from telemetry import metrics
from webhooks import events, signing, transport
from webhooks.pacing import Pacing

logger = logging.getLogger(__name__)
HORIZON_SECONDS = 5.0  # how far ahead the dispatcher books a subscription's slots (well within a lease)
MAX_CLAIM = 500  # deliveries one subscription's claim takes at most (a dispatcher's turn stays short)
QUEUE_LIMIT = 200  # messages waiting on the webhooks queue past which the dispatcher claims nothing more
RESPONSE_BYTES = 4096  # what is read of a receiver's answer: its status is what counts
HTTP_CLIENTS = 32  # pools the requests are dealt round (a pool's bookkeeping grows with its connections)
ROOM_WAIT_SECONDS = 0.5  # how long a thread waits for room on a full engine: a brake, never a long hold
MAX_LOOP_LAG = 0.1  # seconds the engine's loop may run late before it takes no more requests (CPU-bound)
THROTTLE_SECONDS = 5.0  # how long a subscription is held after a 429 without Retry-After
MAX_THROTTLE_SECONDS = 3600.0  # the longest hold one 429 can ask for
NOT_SENT_SECONDS = 5.0  # a request that could not leave (the pace in Redis away) is due again after this
FULL_SECONDS = 2.0  # after an engine had no room: no claims for this long, its deliveries due again after it


def declare(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare ``deliver_webhook`` on ``broker`` (the worker's set-up, ``actors.worker``)."""
    dramatiq.actor(deliver_webhook, queue_name=WEBHOOK_QUEUE, broker=broker, max_retries=3, min_backoff=1000)


@functools.cache
def pacing() -> Pacing:
    current = settings()
    return Pacing(
        redis_client(), current.webhook_rps, current.redis_namespace, current.rate_margin_ms, loop_redis_client()
    )


@functools.cache
def engine() -> CallEngine:
    """This process's webhook requests in flight (started by the worker's boot hook)."""
    current = settings()
    context = transport.ssl_context(current.webhook_ca_file)
    make_http = functools.partial(
        transport.make_client,
        current.webhook_allowed_hosts,
        context,
        current.webhook_timeout_seconds,
        max(1, current.webhook_in_flight // HTTP_CLIENTS),
    )
    return CallEngine(
        None, 0.0, make_http, capacity=current.webhook_in_flight, http_clients=HTTP_CLIENTS, max_lag=MAX_LOOP_LAG
    )


@dataclass(frozen=True)
class Request:
    """One signed request to a subscription's receiver, carrying ``delivery_ids`` under ``token``."""

    subscription_id: str
    url: str
    delivery_ids: list[str]
    token: str
    body: str
    headers: dict[str, str]
    not_before: float  # its slot, in seconds since the epoch


def deliver_webhook(subscription_id: str, delivery_ids: list[str], token: str, not_before: float = 0.0) -> None:
    """Actor: sign the request carrying the deliveries still under ``token`` and hand it to the engine, to
    leave at ``not_before`` (seconds since the epoch: its slot in the subscription's pace)."""
    subscription = subscriptions.get(subscription_id)
    rows = deliveries.leased(delivery_ids, token) if subscription is not None and subscription.enabled else []
    release()
    if not rows:
        return  # delivered, replayed, claimed again since, or its subscription removed or disabled
    now = utcnow()
    ids = [delivery_id for delivery_id, _ in rows]
    body = events.request_body([body for _, body in rows], now)
    headers = signing.headers(
        subscriptions.signing_secrets(subscription, now), events.request_id(ids), int(time.time()), body
    )
    request = Request(subscription_id, subscription.url, ids, token, body, headers, not_before)
    job = Job(
        send=functools.partial(post, request),
        finish=functools.partial(record, request),
        give_back=functools.partial(call_and_release, deliveries.give_back, ids, token),
        crashed=functools.partial(record_crashed, request),
    )
    if not engine().submit(job, wait=ROOM_WAIT_SECONDS):  # full: every dispatcher holds off, these wait a moment
        redis_client().set(full_key(), 1, px=int(FULL_SECONDS * 1000))
        call_and_release(deliveries.give_back, ids, token, FULL_SECONDS)


async def post(request: Request, client: httpx.AsyncClient) -> Answered:
    """Send the request; its answer. At most ``RESPONSE_BYTES`` of the answer are read, and the whole
    exchange has ``WEBHOOK_TIMEOUT_SECONDS`` (a receiver dribbling its answer cannot hold the request longer)."""
    await asyncio.sleep(request.not_before - time.time())  # its slot in the pace
    try:
        while wait_ms := pacing().confirm(request.subscription_id):  # a late timer must not bunch with the next
            await asyncio.sleep(wait_ms / 1000)
    except redis.RedisError:
        raise NotSent("the pace in Redis is not answering") from None
    started, limit = time.monotonic(), settings().webhook_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            async with client.stream("POST", request.url, content=request.body, headers=request.headers) as answer:
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read >= RESPONSE_BYTES:
                        break
                status = answer.status_code
                return Answered(status, parse_retry_after(answer.headers.get("retry-after")) if status == 429 else None)
    except TimeoutError:
        raise NoAnswer(f"no answer within {limit:g} s (WEBHOOK_TIMEOUT_SECONDS)") from None
    finally:
        metrics.worker().webhook_latency.observe(time.monotonic() - started)


@dataclass(frozen=True)
class Answered:
    """A receiver's answer: its status, and with a ``429`` the seconds its ``Retry-After`` asked for."""

    status: int
    retry_after: float | None = None


class NoAnswer(Exception):
    """The receiver did not answer in time."""


class NotSent(Exception):
    """The request did not leave (the pace could not log it): not an attempt, it goes again shortly."""


def record(request: Request, outcome: Answered | Exception) -> None:
    """Record what became of a request (run by a finishing thread of the engine)."""
    ids, token, counter = request.delivery_ids, request.token, metrics.worker().webhook_requests
    if isinstance(outcome, NotSent):
        deliveries.give_back(ids, token, NOT_SENT_SECONDS)
        logger.warning("webhook %s: %s; due again in %g s", request.subscription_id, outcome, NOT_SENT_SECONDS)
        return
    status = outcome.status if isinstance(outcome, Answered) else None
    if status and 200 <= status < 300:
        deliveries.delivered(ids, token, status)
        counter.labels("delivered").inc()
        metrics.worker().webhook_events.inc(len(ids))
        return
    if status == 410:
        reason = "the receiver answered 410 Gone: subscription disabled"
        deliveries.gone(request.subscription_id, ids, token, reason)
        logger.warning("webhook %s: %s", request.subscription_id, reason)
        counter.labels("gone").inc()
        return
    error = f"HTTP {status}" if status else f"{type(outcome).__name__}: {str(outcome) or 'no detail'}"
    if status and 300 <= status < 400:
        error += " (redirects are not followed)"
    held = throttled(request, outcome) if isinstance(outcome, Answered) and status == 429 else 0.0
    if held:
        error += f" (the subscription held {held:g} s)"
    schedule = settings().webhook_retry_schedule
    result = deliveries.failed(ids, token, status, settings().redact(error), schedule, at_least=held)
    counter.labels("dead" if result["dead"] else "retry").inc()
    if result["dead"]:
        logger.warning("webhook %s: %d delivery(ies) dead-lettered: %s", request.subscription_id, result["dead"], error)


def record_crashed(request: Request, error: Exception) -> None:
    """Recording an answer raised (a bug, or the database away for a moment): a failed attempt, tried again
    on the retry schedule, so that a fault that repeats cannot send the request again and again without end."""
    logger.error("webhook %s: recording the answer failed: %r", request.subscription_id, error, exc_info=error)
    reason = settings().redact(f"recording the answer failed: {error!r}")
    deliveries.failed(request.delivery_ids, request.token, None, reason, settings().webhook_retry_schedule)


def throttled(request: Request, answer: Answered) -> float:
    """The receiver answered ``429``: hold its subscription for its ``Retry-After`` (``THROTTLE_SECONDS``
    without one, ``MAX_THROTTLE_SECONDS`` at most); the seconds held."""
    seconds = min(answer.retry_after or THROTTLE_SECONDS, MAX_THROTTLE_SECONDS)
    pacing().hold(request.subscription_id, seconds)
    logger.warning("webhook %s: the receiver answered 429; no request for %g s", request.subscription_id, seconds)
    return seconds


def dispatch_once() -> int:
    """Send every due delivery that each subscription's pace allows within the horizon; return how many."""
    current, sent = settings(), 0
    pipe = redis_client().pipeline(transaction=False)
    pipe.hlen(queue_key(WEBHOOK_QUEUE, "msgs"))
    pipe.exists(full_key())
    waiting, full = pipe.execute()
    if waiting >= QUEUE_LIMIT or full:
        return 0  # the workers are behind: what is claimed now would wait, its lease running
    for subscription in call_and_release(subscriptions.enabled):
        subscription_id = subscription.id
        room = (HORIZON_SECONDS * 1000 - pacing().booked_ms(subscription_id)) / 1000 * current.webhook_rps
        limit = min(MAX_CLAIM, int(room) * subscription.batch_size)
        if limit <= 0:
            continue
        token, ids = call_and_release(deliveries.claim, subscription_id, limit, current.webhook_lease_seconds)
        size = subscription.batch_size
        for start in range(0, len(ids), size):
            not_before = time.time() + pacing().reserve(subscription_id) / 1000
            send("deliver_webhook", WEBHOOK_QUEUE, subscription_id, ids[start : start + size], token, not_before)
        sent += len(ids)
    return sent


def full_key() -> str:
    """Set for ``FULL_SECONDS`` by a worker whose engine had no room for a request."""
    return f"{settings().redis_namespace}:webhooks:engine-full"


class Dispatcher(threading.Thread):
    """Runs :func:`dispatch_once` every ``WEBHOOK_DISPATCH_SECONDS`` (at once again while it finds work), and
    forgets deliveries older than ``WEBHOOK_RETENTION_DAYS`` now and then."""

    PURGE_EVERY_SECONDS = 3600.0

    def __init__(self) -> None:
        super().__init__(name="webhooks", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        purged_at = 0.0
        while not self.stopped.is_set():
            found = 0
            try:
                found = dispatch_once()
                if time.monotonic() - purged_at > self.PURGE_EVERY_SECONDS:
                    purged_at = time.monotonic()
                    self._purge()
            except Exception:  # Redis or the database away: the deliveries wait in the outbox
                logger.exception("dispatching webhooks failed")
            self.stopped.wait(0 if found else settings().webhook_dispatch_seconds)

    def _purge(self) -> None:
        days = settings().webhook_retention_days
        purged = call_and_release(deliveries.purge, utcnow() - timedelta(days=days))
        if purged:
            logger.info("forgot %d webhook delivery(ies) delivered over %g day(s) ago", purged, days)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)
