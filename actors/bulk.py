"""The bulk lane: conversations that can wait are analyzed through xAI's Batch API, at a discount and
outside the per-minute rate limits, so a backfill leaves the real-time lane its whole ``OUTBOUND_RPS`` and
``OUTBOUND_TPM``.

The database drives it, not Redis: each worker process runs a :class:`BulkLane` thread that, every
``BULK_TICK_SECONDS``,

1. forms provider batches from the waiting bulk conversations (``store.provider_batches.form``: by count,
   ``BULK_BATCH_CONVERSATIONS``, or age, ``BULK_FLUSH_SECONDS``), committing the batch, its requests and
   their ``batch_request_id`` s before anything is sent;
2. takes a lease on each batch whose next look is due and moves it one step (:func:`advance`): create it
   at xAI, send the requests not yet sent (a resend after a crash carries the same ids), poll it (every
   ``BULK_POLL_SECONDS``, doubling up to ``BULK_POLL_MAX_SECONDS``), and once nothing is pending, collect
   its results.

Results are validated and stored exactly as real-time answers are (``insights.completion`` and
``store.results.record_results``: the same rows, statuses and partial-failure rules). A request that
ends in an error, a truncated answer, or no answer at all (the batch expired or was cancelled) sends its
conversations back to wait, an attempt spent, to come again in requests of their own.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from datetime import timedelta
from typing import Any

import metrics
from actors.analysis import analyzer
from actors.broker import settings
from insights.analyzer import ConversationToAnalyze
from insights.batch_api import BatchApi, BatchApiError
from insights.completion import read_completion, usage_in
from insights.costs import cost_usd, tokens_of
from insights.errors import UnusableAnswer
from insights.lanes import BULK
from insights.schemas import AnalysisResult
from store import provider_batches, results
from store.db import call_and_release, write_transaction
from store.models import OPEN, SUBMITTED, ProviderBatch, ProviderBatchRequest, database
from store.queries import utcnow

logger = logging.getLogger(__name__)
REQUESTS_PER_CALL = 100  # requests added by one call (xAI takes up to 25 MB a call, 100 calls per 30 s a team)


@functools.cache
def batch_api() -> BatchApi:
    return BatchApi(settings)


def forming_rules() -> provider_batches.Forming:
    return provider_batches.Forming(
        max_conversations=settings.bulk_batch_conversations, per_request=settings.batch_size,
        flush_seconds=settings.bulk_flush_seconds, max_attempts=settings.max_retries, poll_seconds=settings.bulk_poll_seconds,
    )


def tick() -> None:
    """Form what is ready, then move every due batch one step."""
    while batch := call_and_release(provider_batches.form, forming_rules()):
        logger.info("provider batch %s formed: %d conversation(s)", batch.id, batch.conversations, extra={"batch_id": batch.id})
    for batch_id in call_and_release(provider_batches.due):
        if batch := call_and_release(provider_batches.take, batch_id, settings.requeue_seconds):
            call_and_release(work_on, batch)


def work_on(batch: ProviderBatch) -> None:
    """One step on a batch this worker holds, then let go of it (a failed step is tried again later)."""
    try:
        look_in = advance(batch)
    except BatchApiError as error:
        if error.status == 404 and batch.provider_id is not None:  # xAI no longer knows it: nothing will come
            logger.error("provider batch %s: xAI no longer knows %s; its conversations wait for another batch",
                         batch.id, batch.provider_id, extra={"batch_id": batch.id})
            collect(None, batch, f"unknown to xAI ({error})")
            return
        logger.warning("provider batch %s: %s; trying again later", batch.id, error, extra={"batch_id": batch.id})
        wait = error.retry_after if error.retry_after is not None else batch.poll_seconds
        provider_batches.let_go(batch.id, wait, last_error=settings.redact(str(error))[:500])
        return
    if look_in is not None:
        provider_batches.let_go(batch.id, look_in, last_error=None)


def advance(batch: ProviderBatch) -> float | None:
    """Move the batch one step; return the seconds until its next look, or ``None`` once it has ended."""
    api = batch_api()
    if batch.cancel_requested:
        if batch.provider_id is not None:
            api.cancel(batch.provider_id)
        provider_batches.update(batch.id, cancel_requested=False, state=SUBMITTED, end_reason="cancelled by an operator")
        batch.state, batch.end_reason = SUBMITTED, "cancelled by an operator"
    if batch.provider_id is None and batch.state == OPEN:
        batch.provider_id = api.create(batch.id)
        provider_batches.update(batch.id, provider_id=batch.provider_id)
    if batch.state == OPEN:
        sent = send_requests(api, batch)
        provider_batches.update(batch.id, state=SUBMITTED, submitted_at=utcnow(), num_requests=sent, num_pending=sent)
        logger.info("provider batch %s submitted to xAI as %s", batch.id, batch.provider_id, extra={"batch_id": batch.id})
        return batch.poll_seconds
    if overdue(batch):
        api.cancel(batch.provider_id)
        reason = f"not finished by xAI within BULK_GIVE_UP_SECONDS ({settings.bulk_give_up_seconds:g} s)"
        provider_batches.update(batch.id, end_reason=reason)
        batch.end_reason = reason
    counters, failure = api.state(batch.provider_id) if batch.provider_id else ({}, "")
    provider_batches.update(batch.id, **counters)
    if failure:  # failed as a whole: what it answered is stored, what it did not will never come
        collect(api, batch, f"failed at xAI: {settings.redact(failure)}")
        return None
    if counters.get("num_pending", 0) > 0:
        provider_batches.update(batch.id, poll_seconds=min(batch.poll_seconds * 2, settings.bulk_poll_max_seconds))
        return batch.poll_seconds
    collect(api, batch, end_reason(batch, counters))
    return None


def overdue(batch: ProviderBatch) -> bool:
    """Sent longer ago than ``BULK_GIVE_UP_SECONDS`` and not cancelled yet."""
    return (batch.provider_id is not None and batch.submitted_at is not None and batch.end_reason is None
            and utcnow() - batch.submitted_at > timedelta(seconds=settings.bulk_give_up_seconds))


def end_reason(batch: ProviderBatch, counters: dict[str, int]) -> str:
    if batch.end_reason:
        return batch.end_reason
    return "expired at xAI" if counters.get("num_cancelled") else "completed"


def send_requests(api: BatchApi, batch: ProviderBatch) -> int:
    """Send the requests not sent yet, ``REQUESTS_PER_CALL`` at a time, each chunk recorded once xAI has
    it; return how many the batch holds. A chunk xAI refuses because it holds those ids already was sent
    before a crash: it counts as sent."""
    unsent = provider_batches.requests_of(batch.id, submitted=False)
    for start in range(0, len(unsent), REQUESTS_PER_CALL):
        chunk = unsent[start:start + REQUESTS_PER_CALL]
        try:
            api.add(batch.provider_id, request_bodies(chunk))
        except BatchApiError as error:
            if not error.already_added:
                raise
        provider_batches.mark_requests([request.id for request in chunk], submitted=True)
        provider_batches.take_again(batch.id, settings.requeue_seconds)
    return len(provider_batches.requests_of(batch.id))


def request_bodies(chunk: list[ProviderBatchRequest]) -> dict[str, dict[str, Any]]:
    """Each request's chat-completions body: the real-time lane's prompt and schema, for its conversations."""
    ids = [i for request in chunk for i in json.loads(request.conversation_ids)]
    payloads = provider_batches.payloads(ids)
    client = analyzer()
    return {
        request.id: client.request_body([
            ConversationToAnalyze(i, json.loads(payloads[i])["messages"]) for i in json.loads(request.conversation_ids) if i in payloads
        ])
        for request in chunk
    }


def collect(api: BatchApi | None, batch: ProviderBatch, reason: str) -> None:
    """Store every result not stored yet (none without ``api``), send back the conversations of requests
    without one, end it."""
    waiting = {request.id: request for request in provider_batches.requests_of(batch.id, settled=False)}
    for entry in api.results(batch.provider_id) if api and batch.provider_id else ():
        request = waiting.pop(str(entry.get("batch_request_id")), None)
        if request is not None:  # ours and not stored yet (a collection cut short stores the rest)
            store(batch, request, analysis_of(entry, json.loads(request.conversation_ids), batch))
    for request in waiting.values():
        ids = json.loads(request.conversation_ids)
        store(batch, request, failed_result(ids, batch, f"no answer from the Batch API (provider batch {reason})"))
    provider_batches.end(batch.id, reason)
    logger.info("provider batch %s ended: %s", batch.id, reason, extra={"batch_id": batch.id})


def analysis_of(entry: dict[str, Any], ids: list[str], batch: ProviderBatch) -> AnalysisResult:
    """A result entry as an analysis, validated like a real-time answer."""
    if "error_message" in entry:
        return failed_result(ids, batch, f"the Batch API answered an error: {entry['error_message']}")
    try:
        document = entry["batch_result"]["response"]["chat_get_completion"]
    except (KeyError, TypeError):
        return failed_result(ids, batch, "the Batch API's result holds no chat completion")
    active = analyzer()
    try:
        result = read_completion(ids, document, json.dumps(document, ensure_ascii=False), model=active.model,
                                 prompt_version=active.prompt_version, usage=usage_in(document),
                                 vocabulary=active.taxonomy.vocabulary, claim_token=batch.claim_token, batch_id=batch.id)
    except UnusableAnswer as error:
        return failed_result(ids, batch, str(error))
    active.models.note(result.model)
    return result


def failed_result(ids: list[str], batch: ProviderBatch, reason: str) -> AnalysisResult:
    active = analyzer()
    return AnalysisResult(conversation_ids=ids, rows=[], rejected={i: reason for i in ids}, model=active.model,
                          prompt_version=active.prompt_version, raw_response="", claim_token=batch.claim_token,
                          batch_id=batch.id)


def store(batch: ProviderBatch, request: ProviderBatchRequest, result: AnalysisResult) -> None:
    """Store one request's result as ``store.results`` stores any, count its tokens and mark it settled, in
    one transaction: run again after a crash, it finds nothing to do twice."""
    with write_transaction(database.obj):
        outcome = results.record_results(result, settings.max_retries)
        tokens = tokens_of(result.usage)
        provider_batches.add_usage(batch.id, tokens, cost_usd(tokens, result.model, BULK, settings) if tokens else None)
        provider_batches.mark_requests([request.id], settled=True)
    settled = metrics.worker().settled
    for name in ("completed", "retry", "failed"):
        settled.labels(name).inc(len(getattr(outcome, name)))


class BulkLane(threading.Thread):
    """Runs :func:`tick` every ``BULK_TICK_SECONDS`` until stopped (worker processes with a Grok key)."""

    def __init__(self) -> None:
        super().__init__(name="bulk-lane", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                tick()
            except Exception:  # the database or xAI away: try again next round
                logger.exception("bulk lane round failed")
            self.stopped.wait(settings.bulk_tick_seconds)

    def stop(self) -> None:
        self.stopped.set()
