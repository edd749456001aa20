"""The bulk lane under exhausted credits: a step calls xAI only as the one probe of a pause.

The outbound gate holds every real-time call while xAI says the team's credits are used up, and lets one
call a pause through to find out whether they are back (:mod:`insights.credits`). The Batch API waits in
no gate, so each step of the bulk lane asks for that turn itself (:func:`may_step`), and ends it with what
it learnt (:func:`stepped`): credits back (xAI answered), still exhausted (the hold starts again), or not
known (the next probe after a pause). With Redis away nothing can be read: the lane goes on.
"""

from __future__ import annotations

import logging

import redis

from actors.broker import gate, settings
from insights.batch_api import BatchApiError
from insights.credits import ACTION

logger = logging.getLogger(__name__)


def may_step(batch_id: str) -> bool:
    """May a step on ``batch_id`` call xAI now: no hold, or this step is the pause's probe."""
    try:
        return gate().credits.may_call(batch_id, settings().requeue_seconds)
    except redis.RedisError:
        return True


def stepped(batch_id: str, error: Exception | None) -> None:
    """End the step's probe, if it was one, by how xAI answered (``error``: ``None`` when it did; not a
    ``BatchApiError`` when the step failed on its own, which says nothing of the credits)."""
    pause, credits = settings().grok_credits_pause_seconds, gate().credits
    answered = isinstance(error, BatchApiError) and error.status is not None
    try:
        if error is None or (answered and not error.credits_exhausted):
            credits.restored(batch_id)
        elif answered and error.credits_exhausted:
            logger.error("the Batch API says: %s; every worker leaves xAI alone, a probe every %g s", error, pause)
            credits.hold(f"{ACTION}: {settings().redact(str(error))[:300]}", pause, batch_id)
        else:
            credits.release(batch_id, pause)
    except redis.RedisError:
        logger.warning("the credits hold could not be updated: Redis is not answering")
