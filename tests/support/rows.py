"""Conversations and their analyses written through the store in this process, as the workers write them."""

from __future__ import annotations

from insights.schemas import AnalysisResult, InsightRow
from settings import load_settings
from store import claims, queries, results

SETTINGS = load_settings({})  # how a worker prices tokens and redacts reasons


def new(conversation_id: str, payload_hash: str | None = None) -> queries.NewConversation:
    now = queries.utcnow()
    return queries.NewConversation(conversation_id, "{}", payload_hash or f"hash-{conversation_id}", now, now)


def add(conversation_id: str) -> None:
    assert queries.insert_conversations([new(conversation_id)]) == [queries.InsertOutcome.CREATED]


def result(claim: claims.Claim, rows: list[str], rejected: dict[str, str] | None = None) -> AnalysisResult:
    """The analysis of ``claim``'s conversations: a row for each of ``rows``."""
    return AnalysisResult(
        conversation_ids=[c.id for c in claim.conversations],
        rows=[
            InsightRow(
                conversation_id=i, sentiment_score=0.5, clusters=["Billing Issue"], confidence=0.8, reasoning=" ok "
            )
            for i in rows
        ],
        rejected=rejected or {},
        model="test-model",
        prompt_version="p1",
        raw_response='{"raw": true}',
        claim_token=claim.token,
    )


def store_one(conversation_id: str, score: float, confidence: float, max_attempts: int) -> None:
    """Claim ``conversation_id`` and store its insight of ``score`` and ``confidence``, as a worker does."""
    claim = claims.claim_for_processing([conversation_id], max_attempts=max_attempts)
    row = InsightRow(
        conversation_id=conversation_id, sentiment_score=score, clusters=[], confidence=confidence, reasoning="r"
    )
    analysis = AnalysisResult(
        conversation_ids=[conversation_id],
        rows=[row],
        rejected={},
        model="m",
        prompt_version="p",
        raw_response="{}",
        claim_token=claim.token,
    )
    results.record_results(analysis, max_retries=max_attempts, settings=SETTINGS)
