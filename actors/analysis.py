"""A batch's pipeline: ``analyze_batch | store_results``.

``analyze_batch`` claims the conversations (``processing``), analyzes them and returns validated rows
with the raw response; ``store_results`` stores them. A failed store step is retried on its own, without
paying for the analysis again. Conversations without a valid row go back to the batching stream until
they run out of attempts.
"""

from __future__ import annotations

import functools
import json
import logging

import dramatiq
from dramatiq import pipeline

from actors.batching import collect
from actors.broker import settings
from insights.analyzer import Analyzer, ConversationToAnalyze, build_analyzer
from insights.schemas import AnalysisResult
from store import queries

logger = logging.getLogger(__name__)
RETRY_BACKOFF_MS = int(settings.backoff_seconds * 1000)


@functools.cache
def analyzer() -> Analyzer:
    return build_analyzer(settings)


def run_batch(conversation_ids: list[str]) -> None:
    """Enqueue the pipeline for one batch."""
    pipeline([analyze_batch.message(conversation_ids), store_results.message()]).run()


@dramatiq.actor(queue_name="analyze", max_retries=settings.max_retries, min_backoff=RETRY_BACKOFF_MS)
def analyze_batch(conversation_ids: list[str]) -> dict | None:
    """Analyze the still-open conversations of the batch; return an ``AnalysisResult`` as JSON.

    ``None`` when none is open any more (a redelivered batch whose work is already done).
    """
    claimed = queries.claim_for_processing(conversation_ids)
    if not claimed:
        return None
    conversations = [ConversationToAnalyze(c.id, json.loads(c.payload)["messages"]) for c in claimed]
    return analyzer().analyze(conversations).model_dump(mode="json")


@dramatiq.actor(queue_name="store", max_retries=settings.max_retries, min_backoff=RETRY_BACKOFF_MS)
def store_results(analysis: dict | None) -> None:
    """Store the validated rows, settle the batch and send retries back to the stream."""
    if analysis is None:
        return
    result = AnalysisResult.model_validate(analysis)
    outcome = queries.record_results(result, settings.max_retries)
    for conversation_id in outcome.retry:
        collect.send(conversation_id)
    logger.info(
        "batch stored: %d completed, %d retried, %d failed",
        len(outcome.completed), len(outcome.retry), len(outcome.failed),
    )
