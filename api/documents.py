"""Stored rows shaped as the API's answer models (``api.models``), shared by the HTTP API and the ``insights``
CLI: the store returns rows and knows nothing of how they are answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from api.models import ConversationListed, ConversationStatus, InsightOut, LaneUsage, SentText
from insights.conversation import ConversationToAnalyze
from insights.pii.masker import Masker
from insights.schemas import sentiment_label
from settings import Settings
from store.models import Conversation, Insight
from store.usage import LaneUsage as LaneTotals


def isoformat(moment: datetime | None) -> str | None:
    """A stored naive-UTC time as ISO-8601 with ``Z``."""
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if moment else None


def insight_document(insight: Insight, settings: Settings) -> InsightOut:
    return InsightOut(
        conversation_id=insight.conversation_id,
        sentiment_score=insight.sentiment_score,
        sentiment=sentiment_label(insight.sentiment_score, settings.negative_threshold, settings.positive_threshold),
        clusters=json.loads(insight.clusters),
        suggested_cluster=insight.suggested_cluster,
        confidence=insight.confidence,
        reasoning=insight.reasoning,
        model=insight.model,
        lane=insight.lane,
        occurred_at=isoformat(insight.occurred_at),
        received_at=isoformat(insight.received_at),
        analyzed_at=isoformat(insight.analyzed_at),
    )


def listed_document(conversation: Conversation) -> ConversationListed:
    return ConversationListed(
        conversation_id=conversation.id,
        status=conversation.status,
        attempts=conversation.attempts,
        last_error=conversation.last_error,
        lane=conversation.lane,
        provider_batch=conversation.provider_batch,
        occurred_at=isoformat(conversation.occurred_at),
        received_at=isoformat(conversation.received_at),
        updated_at=isoformat(conversation.updated_at),
    )


def status_document(
    conversation: Conversation,
    insight: Insight | None,
    settings: Settings,
    with_payload: bool = False,
    masker: Masker | None = None,
) -> ConversationStatus:
    """A conversation's status; its payload too when ``with_payload``, and what is sent of it with a ``masker``."""
    return ConversationStatus(
        **dict(listed_document(conversation)),
        insight=insight_document(insight, settings) if insight else None,
        payload=json.loads(conversation.payload) if with_payload else None,
        sent=sent_document(conversation, masker) if masker else None,
    )


def sent_document(conversation: Conversation, masker: Masker) -> SentText:
    """The conversation's text as the workers send it to xAI: masked by the same function, :meth:`Masker.batch`."""
    messages = json.loads(conversation.payload)["messages"]
    masked = masker.batch([ConversationToAnalyze(conversation.id, messages)])
    return SentText(
        masking=masker.on,
        messages=masked.conversations[0].messages if masked.conversations else None,
        failure=masked.failed.get(conversation.id),
    )


def usage_document(used: LaneTotals) -> LaneUsage:
    """A lane's tokens and cost, rounded as people read them (tokens to tenths, cost to 1e-6 dollars)."""
    return LaneUsage(
        insights=used.insights,
        prompt_tokens=round(used.prompt_tokens, 1),
        cached_tokens=round(used.cached_tokens, 1),
        cached_share=round(used.cached_share, 4) if used.cached_share is not None else None,
        completion_tokens=round(used.completion_tokens, 1),
        cost_usd=round(used.cost_usd, 10),  # to the tick xAI bills in (1e-10 USD)
        insights_without_cost=used.insights - used.priced,
    )
