"""What becomes of a batch once its analysis ends, in the thread that finishes it.

A result is stored at once (:func:`store_or_hand_on`). A failure is handled by its class
(:mod:`insights.errors`):

- transient (5xx, 408, timeouts): :func:`retry_later`: back to ``queued``, the attempt spent, and the batch
  sent again after an exponential backoff with jitter from ``BACKOFF_SECONDS``; after ``MAX_RETRIES`` tries
  the batch's message is dead-lettered (``insights dlq``) and its conversations ``failed`` with the reason.
  The engine does this itself, as Dramatiq's Retries middleware would: the message that brought the batch
  was acknowledged when the call was handed to the engine;
- the provider's weather (a 429, or no slot in the shared gate soon): not an attempt; the batch is set
  aside until Grok can take it (:func:`set_aside`);
- exhausted credits (a refusal that speaks of credits or a spending limit): not an attempt either; the
  gate holds every call but one probe a ``GROK_CREDITS_PAUSE_SECONDS`` (``insights.credits``) and the batch
  is set aside for the pause;
- unusable answer (truncated, not JSON), a request refused for its content (400, 413, 422) or larger than
  the whole token budget: the batch is split in halves, each sent as a batch of its own; a single
  conversation whose answer stays unusable counts a failed attempt, one that is refused fails at once with
  the provider's reason, and its neighbours complete;
- misconfigured (401, 403, 404): nothing is burned: every worker leaves Grok alone for
  ``GROK_AUTH_PAUSE_SECONDS`` (health reports say why) and the batch is set aside until then.

Every change is made under the batch's claim token: a conversation claimed again since is left alone.
"""

from __future__ import annotations

import functools
import logging
import traceback
from dataclasses import dataclass
from typing import Any

from dramatiq.common import compute_backoff

from actors import reasons
from actors.broker import AGAIN_QUEUE, STORE_QUEUE, dead_letter, gate, send, send_batch, send_for_batching, settings
from insights.errors import (
    SPLITTABLE,
    CreditsExhausted,
    GrokError,
    ProviderBusy,
    RateLimited,
    TransientError,
    UnusableAnswer,
)
from insights.schemas import AnalysisResult
from settings import Settings
from store import claims, results
from telemetry import metrics

logger = logging.getLogger(__name__)


def retry_backoff_ms(settings: Settings) -> int:
    """The first retry's backoff: ``BACKOFF_SECONDS``."""
    return int(settings.backoff_seconds * 1000)


def max_backoff_ms(settings: Settings) -> int:
    """The longest backoff. A batch waiting to be retried leaves its conversations queued: it must come back
    well before the reconciler would take their message for lost."""
    return int(min(5 * 60, settings.requeue_seconds / 2) * 1000)


@dataclass(frozen=True)
class Batch:
    """A batch as its message brought it: the ids, the message's id (it names the batch in logs), the
    tries it has failed so far, and the message itself (to dead-letter it after its last try)."""

    ids: list[str]
    batch_id: str
    tries: int
    message: dict[str, Any]
    model: str  # the analyzer's, for a result it could not give
    prompt_version: str


def conclude(batch: Batch, claim: claims.Claim | None, outcome: AnalysisResult | GrokError) -> None:
    """Store a result, or handle a failure; count either in the metrics."""
    recorded = metrics.worker()
    if isinstance(outcome, GrokError):
        recorded.grok_calls.labels(type(outcome).__name__).inc()
        handle_failure(batch, claim, outcome)
        return
    if not outcome.conversation_ids:
        return  # none was open any more when the call could start
    recorded.batch_size.observe(len(outcome.conversation_ids))
    recorded.grok_calls.labels("ok").inc()
    for kind in ("prompt_tokens", "completion_tokens"):
        used = (outcome.usage or {}).get(kind)  # untrusted like the rest of the answer
        if isinstance(used, int) and used >= 0:
            recorded.tokens.labels(kind.removesuffix("_tokens")).inc(used)
    outcome.batch_id, outcome.claim_token = batch.batch_id, claim.token if claim else None
    store_or_hand_on(outcome)


def handle_failure(batch: Batch, claim: claims.Claim | None, error: GrokError) -> None:
    """See the module's docstring. Without a ``claim`` (the gate refused before the batch was claimed)
    no attempt was counted, none is refunded."""
    ids = [c.id for c in claim.conversations] if claim else batch.ids
    token = claim.token if claim else None
    refund = functools.partial(claims.refund_attempt, claim_token=token) if claim else (lambda *_a, **_k: 0)
    if isinstance(error, TransientError):
        retry_later(batch, ids, token, error)
    elif isinstance(error, (RateLimited, ProviderBusy, CreditsExhausted)):
        refund(ids, requeue=True)
        set_aside(ids, str(error), error.retry_after)
    elif isinstance(error, SPLITTABLE):
        if len(ids) > 1:
            refund(ids, requeue=True)
            split(batch, ids, str(error))
        elif isinstance(error, UnusableAnswer):
            store_or_hand_on(unusable_result(batch, ids, token, str(error)))
        else:
            claims.fail_open(ids, said(str(error)), token)
            logger.error("Grok refused a conversation: %s", error, extra={"conversation_ids": ids})
    else:
        refund(ids, requeue=True)
        set_aside(ids, str(error), settings().grok_auth_pause_seconds)
        hold_grok(str(error))  # after the reason is recorded


def said(reason: str) -> str:
    """``reason`` as a conversation keeps it: without the Grok key (a provider's answer may quote it)."""
    return settings().redact(reason)


def retry_later(batch: Batch, ids: list[str], token: str | None, error: TransientError) -> None:
    """A transient failure: the batch goes again after a backoff, or is given up after its last try."""
    tries = batch.tries + 1
    reason = said(f"{error}{reasons.WILL_RETRY}")
    claims.requeue_claimed(ids, reason, token) if token else claims.note_error(ids, reason)
    if tries >= settings().max_retries:
        dead_letter({**batch.message, "args": [ids]}, "".join(traceback.format_exception(error)))
        fail_exhausted(ids, tries, None)
        return
    delay = int(error.retry_after * 1000) if error.retry_after is not None else backoff_ms(tries)
    logger.warning(
        "transient Grok failure, the batch is tried again in %.1f s: %s",
        delay / 1000,
        error,
        extra={"batch_id": batch.batch_id, "conversation_ids": ids},
    )
    send_batch(
        ids, delay_ms=delay, retries=tries, message_id=batch.batch_id, queue=AGAIN_QUEUE
    )  # the same id, as Dramatiq's


def backoff_ms(tries: int) -> int:
    """Exponential from ``BACKOFF_SECONDS``, capped, jittered: Dramatiq's own, as its Retries middleware uses it."""
    return compute_backoff(tries, factor=retry_backoff_ms(settings()), max_backoff=max_backoff_ms(settings()))[1]


def fail_exhausted(ids: list[str], tries: int, message_traceback: str | None) -> None:
    """The batch is out of tries: its open conversations are ``failed`` with the last reason they recorded."""
    reason = reasons.current(ids, message_traceback, open_only=True)
    failed = claims.fail_open(ids, said(f"gave up after {tries} tries: {reason}"))
    logger.error("batch dead-lettered after %d tries, %d conversation(s) failed: %s", tries, failed, reason)


def unusable_result(batch: Batch, ids: list[str], claim_token: str | None, reason: str) -> AnalysisResult:
    return AnalysisResult(
        conversation_ids=ids,
        rows=[],
        rejected={i: reason for i in ids},
        model=batch.model,
        prompt_version=batch.prompt_version,
        raw_response="",
        claim_token=claim_token,
    )


def split(batch: Batch, ids: list[str], reason: str) -> None:
    """Send the halves of a batch that Grok could not take whole (its attempt refunded first)."""
    half = len(ids) // 2
    logger.warning(
        "splitting a batch of %d (%s)", len(ids), reason, extra={"batch_id": batch.batch_id, "conversation_ids": ids}
    )
    send_batch(ids[:half], queue=AGAIN_QUEUE)
    send_batch(ids[half:], queue=AGAIN_QUEUE)


def set_aside(ids: list[str], reason: str, seconds: float) -> None:
    """Send the batch again once Grok can take it, spending no attempt.

    Its conversations are touched (reason noted) so that the reconciler leaves them alone, and a long
    wait is taken in steps of at most half of ``REQUEUE_SECONDS``, each touching them again: however
    long the pause, each conversation is in one pending batch, not one more per reconciler round.
    """
    delay = max(0.1, min(seconds, settings().requeue_seconds / 2))
    claims.note_error(ids, said(f"waiting: {reason}"))
    logger.warning(
        "Grok cannot take a batch now, %d conversation(s) wait %.0f s: %s",
        len(ids),
        delay,
        reason,
        extra={"conversation_ids": ids},
    )
    send_batch(ids, delay_ms=int(delay * 1000))


def give_back(batch: Batch, claim: claims.Claim) -> None:
    """A call cancelled at shutdown: its conversations back to ``queued``, no attempt spent, sent again at once."""
    ids = [c.id for c in claim.conversations]
    claims.refund_attempt(ids, requeue=True, claim_token=claim.token)
    send_batch(ids, queue=AGAIN_QUEUE)
    logger.warning(
        "stopping: a call in flight was given back, %d conversation(s) sent again",
        len(ids),
        extra={"batch_id": batch.batch_id, "conversation_ids": ids},
    )


def crashed(batch: Batch, claim: claims.Claim, error: Exception) -> None:
    """Finishing a claimed batch raised what no outcome explains (a bug, or the database and Redis away
    together): its open conversations back to ``queued`` with the error, the attempt kept, and sent again.
    Left claimed, they would wait for a lease that a living worker renews for ever; given back with the
    attempt refunded, a fault that repeats would call Grok for them without end. This way it ends, after
    ``MAX_RETRIES`` attempts, in ``failed`` with the error."""
    ids = [c.id for c in claim.conversations]
    logger.error(
        "finishing a batch failed, %d conversation(s) sent again: %r",
        len(ids),
        error,
        exc_info=error,
        extra={"batch_id": batch.batch_id, "conversation_ids": ids},
    )
    claims.requeue_claimed(ids, said(f"the worker failed: {error!r}"), claim.token)
    send_batch(ids, queue=AGAIN_QUEUE)


def grok_hold(patience_ms: float | None = None) -> tuple[str, float] | None:
    """Why and for how long Grok cannot take a call now, or ``None``. Offline, never.

    Any state but ``available`` holds (misconfigured: a refused key or model), except a pause no longer
    than ``patience_ms``: by default the gate's longest wait, which a real-time call waits out in the
    gate; the bulk lane, which waits in no gate, passes 0 and honours every pause. Exhausted credits hold
    for at most ``GROK_CREDITS_PAUSE_SECONDS`` (a probe under way may find them back at once), and not once
    the pause is over: the next call may be the probe, which the gate grants to one caller."""
    if settings().offline:
        return None
    state = gate().state()
    patience = gate().max_wait_ms if patience_ms is None else patience_ms
    if state.state == "available" or (state.state == "paused" and state.seconds_left * 1000 <= patience):
        return None
    if state.state == "credits_exhausted":
        wait = min(state.seconds_left, settings().grok_credits_pause_seconds)
        return (state.reason or state.state, wait) if wait > 0 else None
    return state.reason or state.state, state.seconds_left


def hold_grok(reason: str) -> None:
    """Every worker, both lanes, leaves Grok alone for ``GROK_AUTH_PAUSE_SECONDS`` (a refused key or
    model), and health reports say why."""
    gate().report_misconfiguration(reason, settings().grok_auth_pause_seconds)


def store_or_hand_on(result: AnalysisResult) -> None:
    """Store the result at once; if the database refuses, hand it to the ``store_results`` actor, which
    Dramatiq retries without paying for the analysis again."""
    try:
        settle(result)
    except Exception as error:
        logger.warning(
            "storing the batch failed, the store step will retry it: %s",
            error,
            extra={"batch_id": result.batch_id, "conversation_ids": result.conversation_ids},
        )
        send("store_results", STORE_QUEUE, result.model_dump(mode="json"))


def store(analysis: dict) -> None:
    settle(AnalysisResult.model_validate(analysis))


def settle(result: AnalysisResult) -> None:
    """Store the validated rows, settle the batch and send retries back to the stream."""
    outcome = results.record_results(result, settings().max_retries, settings())
    send_for_batching(outcome.retry)
    settled = metrics.worker().settled
    for name in ("completed", "retry", "failed"):
        settled.labels(name).inc(len(getattr(outcome, name)))
    logger.info(
        "batch stored: %d completed, %d retried, %d failed, %d ignored (not under this claim any more)",
        len(outcome.completed),
        len(outcome.retry),
        len(outcome.failed),
        len(outcome.ignored),
        extra={
            "batch_id": result.batch_id,
            "conversation_ids": result.conversation_ids,
            "model": result.model,
            "completed": outcome.completed,
            "retried": outcome.retry,
            "failed": outcome.failed,
            "ignored": outcome.ignored,
        },
    )
