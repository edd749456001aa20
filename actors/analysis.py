"""A batch's pipeline: ``analyze_batch | store_results``.

``analyze_batch`` claims the conversations (``processing``, one attempt each, under a fresh claim token),
analyzes them and returns validated rows with the raw response and the token; ``store_results`` stores
them for the conversations still under that claim. A failed store step is retried on its own, without
paying for the analysis again. Conversations without a valid row go back to the batching stream until they
run out of attempts.

How Grok's failures are handled:

- transient (429, 5xx, timeouts): the message is retried by Dramatiq with exponential backoff and jitter
  from ``BACKOFF_SECONDS``, or after ``Retry-After``; once its retries are spent it is dead-lettered and
  ``batch_exhausted`` marks its conversations ``failed`` with the reason;
- unusable answer (truncated, not JSON): the batch is split in halves, run again as a Dramatiq group; a
  single conversation whose answer stays unusable counts a failed attempt;
- misconfigured (401/403): nothing is burned: the conversations go back to ``queued``, every worker
  pauses Grok for ``GROK_AUTH_PAUSE_SECONDS`` and the batch is sent again after it.
"""

from __future__ import annotations

import functools
import json
import logging

import dramatiq
from dramatiq import group, pipeline
from dramatiq.middleware import CurrentMessage

import metrics

from actors.batching import collect
from actors.broker import gate, settings
from insights.analyzer import Analyzer, ConversationToAnalyze, build_analyzer
from insights.grok import GrokError, MisconfiguredError, TransientError, UnusableAnswer
from insights.schemas import AnalysisResult
from store import queries, results

logger = logging.getLogger(__name__)
RETRY_BACKOFF_MS = int(settings.backoff_seconds * 1000)
MAX_BACKOFF_MS = 5 * 60 * 1000


@functools.cache
def analyzer() -> Analyzer:
    return build_analyzer(settings, gate)


def batch_pipeline(conversation_ids: list[str]) -> pipeline:
    return pipeline([analyze_batch.message(conversation_ids), store_results.message()])


def run_batch(conversation_ids: list[str], delay_ms: int | None = None) -> None:
    """Enqueue the pipeline for one batch (after ``delay_ms``, if given)."""
    batch_pipeline(conversation_ids).run(delay=delay_ms)


@dramatiq.actor(
    queue_name="analyze",
    max_retries=settings.max_retries - 1,  # with the first try, MAX_RETRIES attempts in all
    min_backoff=RETRY_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
    on_retry_exhausted="batch_exhausted",
)
def analyze_batch(conversation_ids: list[str]) -> dict | None:
    """Analyze the still-open conversations of the batch; return an ``AnalysisResult`` as JSON.

    ``None`` when there is nothing for ``store_results`` to do: nothing open any more (a redelivered
    batch), or the batch was split or postponed.
    """
    if reason := gate.misconfiguration():
        postpone(conversation_ids, reason)
        return None
    claim = queries.claim_for_processing(conversation_ids, settings.max_retries)
    if not claim.conversations:
        return None
    conversations = [ConversationToAnalyze(c.id, json.loads(c.payload)["messages"]) for c in claim.conversations]
    ids = [c.conversation_id for c in conversations]
    recorded = metrics.worker()
    recorded.batch_size.observe(len(ids))
    try:
        with recorded.grok_latency.time():
            result = analyzer().analyze(conversations)
    except GrokError as error:
        recorded.grok_calls.labels(type(error).__name__).inc()
        return handle_failure(ids, claim.token, error)
    recorded.grok_calls.labels("ok").inc()
    for kind in ("prompt_tokens", "completion_tokens"):
        recorded.tokens.labels(kind.removesuffix("_tokens")).inc((result.usage or {}).get(kind) or 0)
    result.batch_id, result.claim_token = batch_id(), claim.token
    return result.model_dump(mode="json")


def handle_failure(ids: list[str], claim_token: str, error: GrokError) -> dict | None:
    """See the module's docstring: retry (transient), split (unusable answer) or postpone (misconfigured)."""
    if isinstance(error, TransientError):
        queries.note_error(ids, f"{error} (will retry)")
        logger.warning("transient Grok failure, the batch will be retried: %s", error,
                       extra={"batch_id": batch_id(), "conversation_ids": ids})
        delay = int(error.retry_after * 1000) if error.retry_after is not None else None
        raise dramatiq.Retry(str(error), delay=delay)
    if isinstance(error, UnusableAnswer):
        if len(ids) == 1:
            return unusable_result(ids, claim_token, str(error))
        split(ids, str(error))
        return None
    assert isinstance(error, MisconfiguredError)
    gate.report_misconfiguration(str(error), settings.grok_auth_pause_seconds)
    queries.refund_attempt(ids, requeue=True)
    postpone(ids, str(error))
    return None


def unusable_result(ids: list[str], claim_token: str, reason: str) -> dict:
    active = analyzer()
    return AnalysisResult(
        conversation_ids=ids, rows=[], rejected={i: reason for i in ids},
        model=active.model, prompt_version=active.prompt_version, raw_response="", claim_token=claim_token,
    ).model_dump(mode="json")


def split(ids: list[str], reason: str) -> None:
    """Run the halves of a batch whose answer was unusable, as a group; its attempt is not counted."""
    queries.refund_attempt(ids)
    half = len(ids) // 2
    logger.warning("splitting a batch of %d (%s)", len(ids), reason, extra={"batch_id": batch_id(), "conversation_ids": ids})
    group([batch_pipeline(ids[:half]), batch_pipeline(ids[half:])]).run()


def postpone(ids: list[str], reason: str) -> None:
    """Send the batch again once the Grok pause for a misconfiguration is over."""
    logger.error("Grok is misconfigured, %d conversation(s) wait: %s", len(ids), reason, extra={"conversation_ids": ids})
    run_batch(ids, delay_ms=int(settings.grok_auth_pause_seconds * 1000))


@dramatiq.actor(queue_name="store", max_retries=settings.max_retries, min_backoff=RETRY_BACKOFF_MS)
def store_results(analysis: dict | None) -> None:
    """Store the validated rows, settle the batch and send retries back to the stream."""
    if analysis is None:
        return
    result = AnalysisResult.model_validate(analysis)
    outcome = results.record_results(result, settings.max_retries)
    for conversation_id in outcome.retry:
        collect.send(conversation_id)
    settled = metrics.worker().settled
    for name in ("completed", "retry", "failed"):
        settled.labels(name).inc(len(getattr(outcome, name)))
    logger.info(
        "batch stored: %d completed, %d retried, %d failed, %d ignored (not under this claim any more)",
        len(outcome.completed), len(outcome.retry), len(outcome.failed), len(outcome.ignored),
        extra={"batch_id": result.batch_id, "conversation_ids": result.conversation_ids, "model": result.model,
               "completed": outcome.completed, "retried": outcome.retry, "failed": outcome.failed,
               "ignored": outcome.ignored},
    )


def batch_id() -> str | None:
    """The id of the Dramatiq message being processed: it names the batch in logs."""
    message = CurrentMessage.get_current_message()
    return message.message_id if message else None


@dramatiq.actor(queue_name="store", max_retries=settings.max_retries, min_backoff=RETRY_BACKOFF_MS)
def batch_exhausted(message: dict, retry_info: dict) -> None:
    """A batch's message spent its retries and is dead-lettered: its open conversations are ``failed``."""
    conversation_ids = message["args"][0]
    traceback = (message.get("options", {}).get("traceback") or "").strip().splitlines()
    reason = traceback[-1] if traceback else "analysis failed"
    failed = queries.fail_open(conversation_ids, f"gave up after {retry_info.get('retries', 0) + 1} tries: {reason}")
    logger.error("batch dead-lettered after retries, %d conversation(s) failed: %s", failed, reason)
