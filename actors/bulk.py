"""The bulk lane: conversations that can wait are analyzed through xAI's Batch API, at a discount and
outside the per-minute rate limits, so a backfill leaves the real-time lane its whole ``OUTBOUND_RPS`` and
``OUTBOUND_TPM``.

The database drives it, not Redis: each worker process runs a :class:`BulkLane` thread that, every
``BULK_TICK_SECONDS``,

1. forms provider batches from the waiting bulk conversations (``store.provider_batches.form``: by count,
   ``BULK_BATCH_CONVERSATIONS``, or age, ``BULK_FLUSH_SECONDS``), committing the batch, its requests and
   their ``batch_request_id`` s before anything is sent;
2. takes a lease on each batch whose next look is due and moves it one step (:func:`advance`): create it
   at xAI, send the requests not yet sent (after a crash, those xAI holds already are read first and not
   sent again), poll it (every ``BULK_POLL_SECONDS``, doubling up to ``BULK_POLL_MAX_SECONDS``), and once
   nothing is pending, collect its results (``actors.bulk_results``).

It honours every hold of the real-time lane (``actors.outcomes.grok_hold``: a refused key or model, any
pause of the gate): while Grok is held it forms nothing and calls nothing. A refused key met here starts
the same hold, for ``GROK_AUTH_PAUSE_SECONDS``, for every worker and both lanes; exhausted credits, the
credits hold, whose one probe a pause a step may be (``actors.bulk_probe``).
"""

from __future__ import annotations

import functools
import logging
import threading
from datetime import timedelta

import redis

from actors import bulk_probe, bulk_requests, bulk_results, outcomes
from actors.broker import settings
from insights.batch_api import BatchApi, BatchApiError, BatchStatus
from store import provider_batches
from store.db import call_and_release
from store.models import OPEN, SUBMITTED, ProviderBatch
from store.queries import utcnow

logger = logging.getLogger(__name__)
Hold = tuple[str, float]  # why Grok is held, and for how many more seconds


@functools.cache
def batch_api() -> BatchApi:
    return BatchApi(settings())


def forming_rules() -> provider_batches.Forming:
    current = settings()
    return provider_batches.Forming(
        max_conversations=current.bulk_batch_conversations,
        per_request=current.batch_size,
        flush_seconds=current.bulk_flush_seconds,
        max_attempts=current.max_retries,
        poll_seconds=current.bulk_poll_seconds,
    )


def held() -> Hold | None:
    """The real-time lane's hold on Grok (:func:`actors.outcomes.grok_hold`), any pause included: the bulk
    lane waits in no gate. With Redis away nothing can be read: the lane, driven by the database, goes on."""
    try:
        return outcomes.grok_hold(patience_ms=0)
    except redis.RedisError:
        return None


def tick() -> Hold | None:
    """Form what is ready, then move every due batch one step; nothing while Grok is held (say why)."""
    if hold := held():
        return hold
    while not refused_lately() and (batch := call_and_release(provider_batches.form, forming_rules())):
        logger.info(
            "provider batch %s formed: %d conversation(s)", batch.id, batch.conversations, extra={"batch_id": batch.id}
        )
    for batch_id in call_and_release(provider_batches.due):
        if hold := held():  # a step on another batch met a refused key
            return hold
        if batch := call_and_release(provider_batches.take, batch_id, settings().requeue_seconds):
            call_and_release(work_on, batch)
    return None


def refused_lately() -> bool:
    """Whether xAI refused a batch outright within ``GROK_AUTH_PAUSE_SECONDS``: none is formed until then
    (a refusal of every batch, say of a model xAI does not take in batches, would otherwise form and
    upload the whole backlog again every few seconds, for ever)."""
    since = utcnow() - timedelta(seconds=settings().grok_auth_pause_seconds)
    return call_and_release(provider_batches.refused_since, since) is not None


def work_on(batch: ProviderBatch) -> None:
    """One step on a batch this worker holds, then let go of it (a failed step is tried again later).
    While xAI says the credits are used up, only the pause's probe steps (``actors.bulk_probe``)."""
    if not bulk_probe.may_step(batch.id):
        provider_batches.let_go(batch.id, settings().grok_credits_pause_seconds)
        return
    try:
        look_in = advance(batch)
    except BatchApiError as error:
        bulk_probe.stepped(batch.id, error)
        if error.status == 404 and batch.provider_id is not None:  # xAI no longer knows it: nothing will come
            logger.error(
                "provider batch %s: xAI no longer knows %s; its conversations wait for another batch",
                batch.id,
                batch.provider_id,
                extra={"batch_id": batch.id},
            )
            bulk_results.collect(None, batch, f"unknown to xAI ({error})")
            return
        provider_batches.let_go(batch.id, failed_step(batch, error), last_error=settings().redact(str(error))[:500])
        return
    except Exception as error:  # what no outcome explains: a bug, or Redis away for the masking counts
        bulk_probe.stepped(batch.id, error)
        crashed(batch, error)
        return
    bulk_probe.stepped(batch.id, None)
    if look_in is not None:
        provider_batches.let_go(batch.id, look_in, last_error=None, failed_steps=0)


def crashed(batch: ProviderBatch, error: Exception) -> None:
    """A step raised what no outcome explains. The batch says so (``insights bulk show``) and is looked at
    again after a wait that doubles; after ``MAX_RETRIES`` such steps in a row it is given up: cancelled at
    xAI, its conversations back to wait with an attempt spent. A fault that repeats thus ends, with the
    conversations ``failed`` and the error, instead of a step tried every lease for ever."""
    reason = settings().redact(f"the worker failed: {error!r}")[:500]
    failed_steps = batch.failed_steps + 1
    logger.error("provider batch %s: a step failed (%d in a row): %r", batch.id, failed_steps, error, exc_info=error)
    wait = min(settings().bulk_poll_seconds * 2 ** (failed_steps - 1), settings().bulk_poll_max_seconds)
    provider_batches.let_go(batch.id, wait, last_error=reason, failed_steps=failed_steps)
    if failed_steps >= settings().max_retries:
        give_up(batch, f"given up after {failed_steps} failed steps: {reason}")


def give_up(batch: ProviderBatch, reason: str) -> None:
    """End the batch: cancelled at xAI (if it can be), and every request without a stored result failed,
    its conversations back to wait with an attempt spent (``actors.bulk_results``)."""
    if batch.provider_id is not None:
        try:
            batch_api().cancel(batch.provider_id)
        except Exception as error:  # xAI away: the batch ends here all the same; what it answers is not read
            logger.warning("provider batch %s: cancelling it at xAI failed: %s", batch.id, error)
    bulk_results.collect(None, batch, reason)


def failed_step(batch: ProviderBatch, error: BatchApiError) -> float:
    """Log a failed step; return the seconds until the batch's next look. A refused key holds every
    worker, both lanes, for ``GROK_AUTH_PAUSE_SECONDS``, as the real-time lane's refusals do."""
    if error.credits_exhausted:
        return settings().grok_credits_pause_seconds
    if error.refuses_key:
        logger.error(
            "provider batch %s: %s; every worker leaves xAI alone for %g s",
            batch.id,
            error,
            settings().grok_auth_pause_seconds,
            extra={"batch_id": batch.id},
        )
        outcomes.hold_grok(settings().redact(str(error)))
        return settings().grok_auth_pause_seconds
    logger.warning("provider batch %s: %s; trying again later", batch.id, error, extra={"batch_id": batch.id})
    return error.retry_after if error.retry_after is not None else batch.poll_seconds


def advance(batch: ProviderBatch) -> float | None:
    """Move the batch one step; return the seconds until its next look, or ``None`` once it has ended."""
    api = batch_api()
    if batch.cancel_requested:
        if batch.provider_id is not None:
            api.cancel(batch.provider_id)
        cancelled = provider_batches.CANCELLED_BY_AN_OPERATOR  # its conversations spend no attempt (bulk_results)
        provider_batches.update(batch.id, cancel_requested=False, state=SUBMITTED, end_reason=cancelled)
        batch.state, batch.end_reason = SUBMITTED, cancelled
    resumed = batch.provider_id is not None  # created at an earlier step: xAI may hold requests not recorded
    if batch.provider_id is None and batch.state == OPEN:
        batch.provider_id = api.create(batch.id)
        provider_batches.update(batch.id, provider_id=batch.provider_id)
    if batch.state == OPEN:
        return submit(api, batch, resumed)
    if overdue(batch):
        api.cancel(batch.provider_id)
        reason = f"not finished by xAI within BULK_GIVE_UP_SECONDS ({settings().bulk_give_up_seconds:g} s)"
        provider_batches.update(batch.id, end_reason=reason)
        batch.end_reason = reason
    return after_poll(api, batch, api.state(batch.provider_id) if batch.provider_id else BatchStatus())


def submit(api: BatchApi, batch: ProviderBatch, resumed: bool) -> float | None:
    """Send the batch's requests and mark it submitted; return when to poll it. Requests refused because xAI
    has refused the batch outright meanwhile (a refused batch takes nothing more) end it here."""
    try:
        sent = bulk_requests.send_requests(api, batch, resumed)
    except BatchApiError as error:
        if not error.refused_request or not (status := api.state(batch.provider_id)).refusal:
            raise
        return after_poll(api, batch, status)
    provider_batches.update(batch.id, state=SUBMITTED, submitted_at=utcnow(), num_requests=sent, num_pending=sent)
    logger.info("provider batch %s submitted to xAI as %s", batch.id, batch.provider_id, extra={"batch_id": batch.id})
    return batch.poll_seconds


def after_poll(api: BatchApi, batch: ProviderBatch, status: BatchStatus) -> float | None:
    """Record the batch's counters; collect it once nothing more will come, else say when to poll again."""
    if status.counters:
        provider_batches.update(batch.id, **status.counters)
    if status.refusal:  # refused outright by xAI: not the conversations' fault, no attempt spent
        reason = f"{provider_batches.REFUSED_BY_XAI}: {settings().redact(status.refusal)}"
        logger.error(
            "provider batch %s %s; its conversations wait for another batch, no attempt spent, none formed for %g s",
            batch.id,
            reason,
            settings().grok_auth_pause_seconds,
            extra={"batch_id": batch.id},
        )
        bulk_results.collect(api, batch, reason, refund=True)
        return None
    if status.failure:  # failed as a whole: what it answered is stored, what it did not will never come
        bulk_results.collect(api, batch, f"failed at xAI: {settings().redact(status.failure)}")
        return None
    if status.counters.get("num_pending", 0) > 0:
        provider_batches.update(batch.id, poll_seconds=min(batch.poll_seconds * 2, settings().bulk_poll_max_seconds))
        return batch.poll_seconds
    bulk_results.collect(api, batch, end_reason(batch, status.counters))
    return None


def overdue(batch: ProviderBatch) -> bool:
    """Sent longer ago than ``BULK_GIVE_UP_SECONDS`` and not cancelled yet."""
    return (
        batch.provider_id is not None
        and batch.submitted_at is not None
        and batch.end_reason is None
        and utcnow() - batch.submitted_at > timedelta(seconds=settings().bulk_give_up_seconds)
    )


def end_reason(batch: ProviderBatch, counters: dict[str, int]) -> str:
    if batch.end_reason:
        return batch.end_reason
    return "expired at xAI" if counters.get("num_cancelled") else "completed"


class BulkLane(threading.Thread):
    """Runs :func:`tick` every ``BULK_TICK_SECONDS`` until stopped (worker processes with a Grok key)."""

    def __init__(self) -> None:
        super().__init__(name="bulk-lane", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        hold: Hold | None = None
        while not self.stopped.is_set():
            try:
                hold = self.note(hold, tick())
            except Exception:  # the database or xAI away: try again next round
                logger.exception("bulk lane round failed")
            self.stopped.wait(settings().bulk_tick_seconds)

    @staticmethod
    def note(before: Hold | None, now: Hold | None) -> Hold | None:
        """Log a hold when it begins or its reason changes, and its end."""
        if now and (before is None or before[0] != now[0]):
            logger.warning("bulk lane held, nothing is sent to xAI for %.0f s: %s", now[1], now[0])
        elif before and not now:
            logger.info("bulk lane resumed: Grok is no longer held")
        return now

    def stop(self) -> None:
        self.stopped.set()
