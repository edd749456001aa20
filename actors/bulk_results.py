"""The end of a provider batch (``actors.bulk``): its results stored exactly as real-time answers are
(``insights.completion`` and ``store.results.record_results``: the same rows, statuses and partial-failure
rules), and what became of the requests that have none.

A request that ends in an error (a string, an object, an empty ``batch_result``) or a truncated or
unusable answer sends its conversations back to wait, an attempt spent, to come again each in a request
of its own (``Conversation.isolated``). A request without an answer because the batch ended as a whole
(it expired, failed, was given up or forgotten by xAI) sends them back too, an attempt spent, but to share
requests again: nothing says one of them was at fault. A batch that xAI refused outright
(``cancel_by_xai_message``) or that an operator cancelled answered nothing through any fault of theirs:
its conversations go back without spending an attempt.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from actors.analysis import analyzer
from actors.broker import settings
from insights.batch_api import BatchApi, completion_of, error_of
from insights.completion import read_completion, usage_in
from insights.costs import cost_usd, tokens_of
from insights.errors import UnusableAnswer
from insights.grok import kept
from insights.lanes import BULK
from insights.schemas import AnalysisResult
from store import claims, provider_batches, results
from store.db import write_transaction
from store.models import ProviderBatch, ProviderBatchRequest, database
from telemetry import metrics

logger = logging.getLogger(__name__)


def collect(api: BatchApi | None, batch: ProviderBatch, reason: str, refund: bool = False) -> None:
    """Store every result not stored yet (none without ``api``), send back the conversations of requests
    without one (with ``refund``, or once an operator cancelled the batch, without spending their attempt),
    end the batch."""
    refund = refund or provider_batches.cancelled_by_an_operator(batch)
    waiting = {request.id: request for request in provider_batches.requests_of(batch.id, settled=False)}
    for entry in api.results(batch.provider_id) if api and batch.provider_id else ():
        request = waiting.pop(str(entry.get("batch_request_id")), None)
        if request is not None:  # ours and not stored yet (a collection cut short stores the rest)
            store(batch, request, analysis_of(entry, json.loads(request.conversation_ids), batch), isolate=True)
    for request in waiting.values():
        if refund:
            give_back(batch, request, f"waiting for another batch: provider batch {batch.id} {reason}")
        else:
            ids = json.loads(request.conversation_ids)
            store(
                batch,
                request,
                failed_result(ids, batch, f"no answer from the Batch API (provider batch {reason})"),
                isolate=False,
            )
    provider_batches.end(batch.id, reason)
    logger.info("provider batch %s ended: %s", batch.id, reason, extra={"batch_id": batch.id})


def analysis_of(entry: dict[str, Any], ids: list[str], batch: ProviderBatch) -> AnalysisResult:
    """A result entry as an analysis, validated like a real-time answer."""
    if (error := error_of(entry)) is not None:
        return failed_result(ids, batch, f"the Batch API answered an error: {settings().redact(error)}")
    document = completion_of(entry)
    active = analyzer()
    try:
        result = read_completion(
            ids,
            document,
            json.dumps(document, ensure_ascii=False),
            model=active.model,
            prompt_version=active.prompt_version,
            usage=usage_in(document),
            vocabulary=active.taxonomy.vocabulary,
            claim_token=batch.claim_token,
            batch_id=batch.id,
        )
    except UnusableAnswer as error:
        return failed_result(ids, batch, str(error))
    kept(active.models.note, result.model)
    return result


def failed_result(ids: list[str], batch: ProviderBatch, reason: str) -> AnalysisResult:
    active = analyzer()
    return AnalysisResult(
        conversation_ids=ids,
        rows=[],
        rejected={i: reason for i in ids},
        model=active.model,
        prompt_version=active.prompt_version,
        raw_response="",
        claim_token=batch.claim_token,
        batch_id=batch.id,
    )


def store(batch: ProviderBatch, request: ProviderBatchRequest, result: AnalysisResult, isolate: bool) -> None:
    """Store one request's result as ``store.results`` stores any, count its tokens and mark it settled, in
    one transaction: run again after a crash, it finds nothing to do twice. With ``isolate`` (the request
    failed on its own) the conversations sent back get a request of their own next time."""
    with write_transaction(database.obj):
        outcome = results.record_results(result, settings().max_retries, settings())
        if isolate:
            provider_batches.isolate(outcome.retry)
        tokens = tokens_of(result.usage)
        provider_batches.add_usage(
            batch.id, tokens, cost_usd(tokens, result.model, BULK, settings()) if tokens else None
        )
        provider_batches.mark_requests([request.id], settled=True)
    settled = metrics.worker().settled
    for name in ("completed", "retry", "failed"):
        settled.labels(name).inc(len(getattr(outcome, name)))


def give_back(batch: ProviderBatch, request: ProviderBatchRequest, reason: str) -> None:
    """The request's conversations back to wait for another batch, their attempt refunded and ``reason``
    noted, and the request settled, in one transaction."""
    with write_transaction(database.obj):
        claims.refund_attempt(
            json.loads(request.conversation_ids),
            requeue=True,
            claim_token=batch.claim_token,
            reason=settings().redact(reason),
        )
        provider_batches.mark_requests([request.id], settled=True)
