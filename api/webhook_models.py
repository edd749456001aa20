"""Pydantic models of the webhooks' side of the API: the subscriptions' answers, and the events a receiver
is sent (documented under the OpenAPI document's ``webhooks``; ``store.outbox`` writes them)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

EventType = Literal["conversation.completed", "conversation.failed", "provider_batch.ended"]


class Subscription(BaseModel):
    id: str = Field(description="wh_ and a ULID")
    url: str
    events: list[EventType]
    batch_size: int = Field(ge=1, description="events one request may carry")
    enabled: bool = Field(description="false once the receiver answered 410 Gone (insights webhooks enable)")
    disabled_reason: str | None
    created_at: str


class SubscriptionCreated(Subscription):
    secret: str = Field(description="whsec_ and base64: the signing secret, shown this once")


class Subscriptions(BaseModel):
    webhooks: list[Subscription]


class Rotated(BaseModel):
    id: str
    secret: str = Field(description="the new signing secret, shown this once")
    previous_secret_signs_for_hours: float = Field(description="the old secret signs too until then")


class EventInsight(BaseModel):
    sentiment_score: float = Field(ge=-1, le=1)
    clusters: list[str]
    suggested_cluster: str | None
    confidence: float = Field(ge=0, le=1)
    reasoning: str
    model: str
    prompt_version: str
    analyzed_at: str


class ConversationEventData(BaseModel):
    event_id: str = Field(description="msg_ and a ULID: the same on every attempt; de-duplicate by it")
    conversation_id: str
    status: Literal["completed", "failed"]
    occurred_at: str | None = Field(description="when the conversation occurred")
    insight: EventInsight | None = Field(None, description="conversation.completed")
    reason: str | None = Field(None, description="conversation.failed: why")


class BatchRequests(BaseModel):
    total: int
    succeeded: int
    failed: int


class BatchEventData(BaseModel):
    event_id: str
    batch_id: str
    provider_batch_id: str | None = Field(description="xAI's batch_id")
    end_reason: str | None
    conversations: int
    created_at: str | None
    ended_at: str | None
    requests: BatchRequests
    cost_usd: float


class ConversationEvent(BaseModel):
    type: Literal["conversation.completed", "conversation.failed"]
    timestamp: str = Field(description="when the event occurred")
    data: ConversationEventData


class BatchEndedEvent(BaseModel):
    type: Literal["provider_batch.ended"]
    timestamp: str
    data: BatchEventData


class EventBatch(BaseModel):
    """A request of a subscription that asks for batches, when it carries more than one event."""

    type: Literal["batch"]
    timestamp: str
    data: dict[Literal["events"], list[ConversationEvent | BatchEndedEvent]]
