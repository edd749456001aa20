"""Pydantic models of the API's answers: handlers build their JSON through them, and the OpenAPI
document is generated from them (and from the request models), so the two cannot drift apart."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Sentiment = Literal["positive", "neutral", "negative"]
Status = Literal["queued", "processing", "completed", "failed"]
Lane = Literal["realtime", "bulk"]


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    conversation_id: str
    message: Literal["Conversation queued for analysis"] = "Conversation queued for analysis"


class FieldError(BaseModel):
    path: str = Field(description="dotted path of the offending field, e.g. messages.0.content")
    message: str


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable, e.g. validation_failed, rate_limited, not_found")
    message: str
    model_config = {"extra": "allow"}  # details such as fields, parameter, retry_after_seconds


class Error(BaseModel):
    error: ErrorBody


class InsightOut(BaseModel):
    conversation_id: str
    sentiment_score: float = Field(ge=-1, le=1)
    sentiment: Sentiment
    clusters: list[str]
    suggested_cluster: str | None = Field(
        default=None, description="with a closed taxonomy, what an 'other' conversation's topic might be called"
    )
    confidence: float = Field(ge=0, le=1)
    reasoning: str
    model: str
    lane: Lane = Field(description="the lane that analyzed it")
    occurred_at: str | None = Field(description="when the conversation happened: windows are on this time")
    received_at: str | None = Field(description="when the service accepted it")
    analyzed_at: str | None


class ConversationListed(BaseModel):
    conversation_id: str
    status: Status
    attempts: int
    last_error: str | None
    lane: Lane = Field(description="realtime (analyzed within seconds) or bulk (through xAI's Batch API)")
    provider_batch: str | None = Field(
        default=None, description="the bulk lane's provider batch it went to last (`insights bulk show`)"
    )
    occurred_at: str | None = Field(
        description="when the conversation happened (its occurred_at, else its first "
        "message's timestamp, else received_at)"
    )
    received_at: str | None = Field(description="when the service accepted it")
    updated_at: str | None


class SentText(BaseModel):
    masking: bool = Field(description="whether personal data is masked before it is sent (PII_MASKING)")
    messages: list[dict[str, str]] | None = Field(
        description="each message's role and content exactly as they are sent to xAI; null when masking failed"
    )
    failure: str | None = Field(description="why the conversation cannot be sent, when its masking failed")


class ConversationStatus(ConversationListed):
    insight: InsightOut | None
    payload: dict[str, Any] | None = Field(default=None, description="messages and metadata, with include=payload")
    sent: SentText | None = Field(
        default=None, description="with include=sent: the text that goes to xAI, masked as the settings say"
    )


class ConversationPage(BaseModel):
    conversations: list[ConversationListed]
    returned_count: int
    next_cursor: str | None


class TimeWindow(BaseModel):
    start_time: str | None
    end_time: str | None


class PageMetadata(BaseModel):
    total_count: int
    returned_count: int
    time_window: TimeWindow
    next_cursor: str | None


class InsightsPage(BaseModel):
    insights: list[InsightOut]
    metadata: PageMetadata


class BatchItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "conflict", "invalid", "rate_limited"]
    conversation_id: str | None = None
    errors: list[FieldError] | None = None


class BatchResults(BaseModel):
    results: list[BatchItemResult]
    summary: dict[str, int]


class SentimentSummary(BaseModel):
    counts: dict[Sentiment, int]
    mean_score: float | None


class ClusterCount(BaseModel):
    cluster: str
    count: int


class FailureCount(BaseModel):
    reason: str
    count: int


class LaneUsage(BaseModel):
    insights: int
    prompt_tokens: float = Field(
        description="each insight's share of its call's tokens, added up (cached ones included)"
    )
    cached_tokens: float = Field(
        description="of the prompt tokens, those xAI's prompt cache served (billed at the cached input price)"
    )
    cached_share: float | None = Field(
        description="cached_tokens / prompt_tokens, from 0 to 1; null without prompt tokens"
    )
    completion_tokens: float
    cost_usd: float = Field(
        description="of the insights whose cost is known, at the configured prices "
        "(model_prices in config.toml; the bulk lane at the Batch API's discount)"
    )
    insights_without_cost: int = Field(
        description="insights whose model has no price, or stored before costs were kept"
    )


class Summary(BaseModel):
    time_window: TimeWindow
    sentiment: SentimentSummary
    top_clusters: list[ClusterCount]
    conversations_by_status: dict[Status, int]
    top_failure_reasons: list[FailureCount]
    oldest_waiting_seconds: float = Field(
        description="how long the longest current wait among the window's open conversations has lasted, "
        "from its last enqueue (acceptance, reprocessing, requeue); 0 when none waits"
    )
    usage: dict[Lane, LaneUsage] = Field(description="tokens and cost of the window's insights, by lane")


class TrendBucket(BaseModel):
    start_time: str = Field(
        description="the bucket's start: an hour or UTC midnight, or the window's start for the first"
    )
    end_time: str = Field(
        description="the bucket's end (exclusive): the next hour or midnight, or the window's end for the last"
    )
    count: int = Field(description="insights of conversations that occurred in the bucket and match the filters")
    sentiment: SentimentSummary
    top_clusters: list[ClusterCount] | None = Field(
        description="the clusters most often named by the bucket's insights, most first; null when `cluster` is given"
    )


class Trends(BaseModel):
    time_window: TimeWindow
    bucket: Literal["hour", "day"]
    cluster: str | None
    buckets: list[TrendBucket] = Field(description="every bucket of the window, oldest first, empty ones included")


class Health(BaseModel):
    status: Literal["ok"]


class GrokStatus(BaseModel):
    state: Literal["available", "paused", "misconfigured", "credits_exhausted"]
    reason: str | None = Field(description="Why Grok is paused, misconfigured or out of credits, and what to do")
    seconds_left: float = Field(description="Until the pause ends or the workers try again")


class Ready(BaseModel):
    status: Literal["ready", "degraded"] = Field(description="degraded: Redis is not answering (ingress still accepts)")
    checks: dict[str, str] = Field(description='"ok", or what went wrong, for "database" and "redis"')
    grok: GrokStatus | None = Field(description="The workers' view of Grok (null when Redis is not answering)")


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=False)
