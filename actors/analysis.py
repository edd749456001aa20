"""A batch's pipeline: ``analyze_batch | store_results``.

``analyze_batch`` waits for its call's slot in the shared gate, then claims the conversations still open
(``processing``, one attempt each, under a fresh claim token: a batch waiting for its slot leaves them
``queued``), analyzes them and stores the validated rows with the raw response at once, for the conversations still
under that claim; if storing fails, it hands the result to ``store_results``, which Dramatiq retries on
its own, without paying for the analysis again. Conversations without a valid row go back to the batching
stream until they run out of attempts.

How Grok's failures are handled (the classes of :mod:`insights.errors`):

- transient (5xx, 408, timeouts): the message is retried by Dramatiq with exponential backoff and jitter
  from ``BACKOFF_SECONDS``; once its retries are spent it is dead-lettered and ``batch_exhausted`` marks
  its conversations ``failed`` with the reason;
- the provider's weather (a 429, or no slot in the shared gate soon): not an attempt; the batch is set
  aside until Grok can take it (:func:`set_aside`);
- unusable answer (truncated, not JSON), a request refused for its content (400, 413, 422) or larger than
  the whole token budget: the batch is split in halves, run again as a Dramatiq group; a single
  conversation whose answer stays unusable counts a failed attempt, one that is refused fails at once
  with the provider's reason, and its neighbours complete;
- misconfigured (401, 403, 404): nothing is burned: every worker leaves Grok alone for
  ``GROK_AUTH_PAUSE_SECONDS`` (health reports say why) and the batch is set aside until then.

While Grok is misconfigured or paused for longer than the gate would wait, batches are set aside before
their conversations are claimed. A thread waiting on the gate or on Grok holds no database connection.
"""

from __future__ import annotations

import functools
import json
import logging

import dramatiq
from dramatiq import group, pipeline
from dramatiq.middleware import CurrentMessage

import metrics

from actors import reasons
from actors.batching import collect
from actors.broker import STREAMED_LANES, gate, settings
from insights.analyzer import Analyzer, ConversationToAnalyze, build_analyzer
from insights.errors import SPLITTABLE, GrokError, ProviderBusy, RateLimited, TransientError, UnusableAnswer
from insights.schemas import AnalysisResult
from store import queries, results
from store.db import release

logger = logging.getLogger(__name__)
RETRY_BACKOFF_MS = int(settings.backoff_seconds * 1000)
# A retried batch keeps its conversations ``processing``; it must come back well within their lease.
MAX_BACKOFF_MS = int(min(5 * 60, settings.lease_seconds / 2) * 1000)
ANALYZE_PRIORITY = 10  # lower than collect and store (0): a free thread stores finished work first


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
    priority=ANALYZE_PRIORITY,
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
    if hold := grok_hold():
        set_aside(conversation_ids, *hold)
        return None
    payloads = queries.open_payloads(conversation_ids, STREAMED_LANES)
    if not payloads:
        return None
    conversations = [ConversationToAnalyze(i, json.loads(payload)["messages"]) for i, payload in payloads.items()]
    release()  # the wait on the gate and on Grok holds no database connection
    claims: list[queries.Claim] = []
    recorded = metrics.worker()
    try:
        with recorded.grok_latency.time():
            result = analyzer().analyze(conversations, functools.partial(claim_now, claims))
    except GrokError as error:
        recorded.grok_calls.labels(type(error).__name__).inc()
        return handle_failure(claims[0] if claims else None, list(payloads), error)
    if not result.conversation_ids:
        return None  # none was open any more when the call could start
    recorded.batch_size.observe(len(result.conversation_ids))
    recorded.grok_calls.labels("ok").inc()
    for kind in ("prompt_tokens", "completion_tokens"):
        used = (result.usage or {}).get(kind)  # untrusted like the rest of the answer
        if isinstance(used, int) and used >= 0:
            recorded.tokens.labels(kind.removesuffix("_tokens")).inc(used)
    result.batch_id, result.claim_token = batch_id(), claims[0].token
    return store_or_hand_on(result)


def claim_now(claims: list[queries.Claim], conversation_ids: list[str]) -> list[str]:
    """Claim the batch once its call may start (the analyzer calls this after the gate's wait, so that
    a batch waiting for its slot leaves its conversations ``queued``); return the ids claimed."""
    claim = queries.claim_for_processing(conversation_ids, settings.max_retries, STREAMED_LANES)
    release()
    claims.append(claim)
    return [c.id for c in claim.conversations]


def grok_hold() -> tuple[str, float] | None:
    """Why and for how long Grok cannot take a call now (misconfigured, or paused longer than the gate
    would wait), or ``None``. Offline, never."""
    if settings.offline:
        return None
    state = gate.state()
    if state.state == "misconfigured" or (state.state == "paused" and state.seconds_left * 1000 > gate.max_wait_ms):
        return state.reason or state.state, state.seconds_left
    return None


def handle_failure(claim: queries.Claim | None, open_ids: list[str], error: GrokError) -> dict | None:
    """See the module's docstring: retry, set aside, split, or fail the one refused conversation. Without
    a ``claim`` (the gate refused before the batch was claimed) no attempt was counted, none is refunded.
    Every change is made under the claim's token: a conversation claimed again since is left alone."""
    ids = [c.id for c in claim.conversations] if claim else open_ids
    claim_token = claim.token if claim else None
    refund_attempt = functools.partial(queries.refund_attempt, claim_token=claim_token) if claim else (lambda *_a, **_k: 0)
    if isinstance(error, TransientError):
        queries.note_error(ids, f"{error}{reasons.WILL_RETRY}", claim_token)
        logger.warning("transient Grok failure, the batch will be retried: %s", error,
                       extra={"batch_id": batch_id(), "conversation_ids": ids})
        delay = int(error.retry_after * 1000) if error.retry_after is not None else None
        raise dramatiq.Retry(str(error), delay=delay)
    if isinstance(error, (RateLimited, ProviderBusy)):
        refund_attempt(ids, requeue=True)
        set_aside(ids, str(error), error.retry_after)
        return None
    if isinstance(error, SPLITTABLE):
        if len(ids) > 1:
            refund_attempt(ids)
            split(ids, str(error))
        elif isinstance(error, UnusableAnswer):
            return unusable_result(ids, claim_token, str(error))
        else:
            queries.fail_open(ids, str(error), claim_token)
            logger.error("Grok refused a conversation: %s", error, extra={"conversation_ids": ids})
        return None
    gate.report_misconfiguration(str(error), settings.grok_auth_pause_seconds)
    refund_attempt(ids, requeue=True)
    set_aside(ids, str(error), settings.grok_auth_pause_seconds)
    return None


def unusable_result(ids: list[str], claim_token: str | None, reason: str) -> dict | None:
    active = analyzer()
    return store_or_hand_on(AnalysisResult(
        conversation_ids=ids, rows=[], rejected={i: reason for i in ids},
        model=active.model, prompt_version=active.prompt_version, raw_response="", claim_token=claim_token,
    ))


def split(ids: list[str], reason: str) -> None:
    """Run the halves of a batch that Grok could not take whole, as a group (its attempt refunded first)."""
    half = len(ids) // 2
    logger.warning("splitting a batch of %d (%s)", len(ids), reason, extra={"batch_id": batch_id(), "conversation_ids": ids})
    group([batch_pipeline(ids[:half]), batch_pipeline(ids[half:])]).run()


def set_aside(ids: list[str], reason: str, seconds: float) -> None:
    """Send the batch again once Grok can take it, spending no attempt.

    Its conversations are touched (lease renewed, reason noted) so that the reconciler leaves them
    alone, and a long wait is taken in steps of at most half a lease, each touching them again: however
    long the pause, each conversation is in one pending batch, not one more per reconciler round.
    """
    delay = max(0.1, min(seconds, settings.lease_seconds / 2))
    queries.note_error(ids, f"waiting: {reason}")
    logger.warning("Grok cannot take a batch now, %d conversation(s) wait %.0f s: %s", len(ids), delay, reason,
                   extra={"conversation_ids": ids})
    run_batch(ids, delay_ms=int(delay * 1000))


@dramatiq.actor(queue_name="store", max_retries=settings.max_retries, min_backoff=RETRY_BACKOFF_MS)
def store_results(analysis: dict | None) -> None:
    """The pipeline's second step: store a result that ``analyze_batch`` could not store itself."""
    if analysis is not None:
        settle(AnalysisResult.model_validate(analysis))


def store_or_hand_on(result: AnalysisResult) -> dict | None:
    """Store the result at once, in the thread that made the call; if the database refuses, hand it to
    the ``store_results`` step, which Dramatiq retries without paying for the analysis again.

    Storing in place spares a queue hop and a wait for a free thread: with hundreds of threads waiting
    on Grok, a separate store message waits its turn among the analysis messages.
    """
    try:
        settle(result)
    except Exception as error:  # noqa: BLE001 - any failure to store is retried by the store step
        logger.warning("storing the batch failed, the store step will retry it: %s", error,
                       extra={"batch_id": result.batch_id, "conversation_ids": result.conversation_ids})
        return result.model_dump(mode="json")
    return None


def settle(result: AnalysisResult) -> None:
    """Store the validated rows, settle the batch and send retries back to the stream."""
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
    """A batch's message spent its retries and is dead-lettered: its open conversations are ``failed``,
    with the reason they recorded for the last try (see ``actors.reasons``)."""
    conversation_ids = message["args"][0]
    reason = reasons.current(conversation_ids, message.get("options", {}).get("traceback"), open_only=True)
    failed = queries.fail_open(conversation_ids, f"gave up after {retry_info.get('retries', 0) + 1} tries: {reason}")
    logger.error("batch dead-lettered after retries, %d conversation(s) failed: %s", failed, reason)
