"""The read side: pages of insights, exports, summaries and what waits (one snapshot where it matters).

Writes and status moves live in ``store.queries`` and ``store.results``; whole-day counts in
``store.counts``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from peewee import Tuple, fn

from store import counts, deliveries, provider_batches, usage
from store.db import contains_any_case
from store.models import BATCH_STATES, FAILED, LANES, STATUSES, Conversation, Insight
from store.queries import OPEN_STATUSES, utcnow
from store.webhook_models import DELIVERY_STATUSES


@dataclass
class InsightQuery:
    start: datetime
    end: datetime
    limit: int
    filters: counts.Filters = counts.Filters()
    after: tuple[datetime, str] | None = None  # keyset cursor: (occurred_at, conversation_id)


@dataclass
class InsightPage:
    insights: list[Insight]
    total_count: int
    next_after: tuple[datetime, str] | None


def _window(start: datetime, end: datetime, after: tuple[datetime, str] | None = None, *conditions: Any):
    """Insights that occurred in ``[start, end)`` matching ``conditions``, after the keyset cursor ``after``."""
    query = Insight.select().where(Insight.occurred_at >= start, Insight.occurred_at < end, *conditions)
    if after is not None:
        query = query.where(Tuple(Insight.occurred_at, Insight.conversation) > Tuple(*after))
    return query


def _page_statement(query: InsightQuery):
    """The page, with one extra row that tells whether another page follows."""
    page = _window(query.start, query.end, query.after, *query.filters.conditions())
    return page.order_by(Insight.occurred_at, Insight.conversation).limit(query.limit + 1)


def explainable(query: InsightQuery) -> dict[str, tuple[str, list]]:
    """SQL and parameters of a page's statements, for ``EXPLAIN`` (see ``benchmarks/bench_query.py``)."""
    return {
        "count": counts.count_statement(query.start, query.end, query.filters),
        "page": _page_statement(query).sql(),
    }


def query_insights(query: InsightQuery) -> InsightPage:
    """One page of the insights that occurred in ``[start, end)``, oldest first, and the count of all matches."""
    total = counts.count(query.start, query.end, query.filters)
    page = list(_page_statement(query))
    next_after = None
    if len(page) > query.limit:
        page = page[: query.limit]
        next_after = (page[-1].occurred_at, page[-1].conversation_id)
    return InsightPage(page, total, next_after)


def iter_insights(start: datetime, end: datetime, page_size: int = 1000) -> Iterator[Insight]:
    """Every insight that occurred in ``[start, end)``, oldest first, read a page at a time (any size)."""
    after = None
    while True:
        page = list(_window(start, end, after).order_by(Insight.occurred_at, Insight.conversation).limit(page_size))
        yield from page
        if len(page) < page_size:
            return
        after = (page[-1].occurred_at, page[-1].conversation_id)


@dataclass
class ConversationQuery:
    """The operations view: conversations that occurred in ``[start, end)``, by status and failure reason."""

    start: datetime
    end: datetime
    limit: int
    status: str | None = None
    reason: str | None = None  # a part of last_error, any case
    after: tuple[datetime, str] | None = None  # keyset cursor: (occurred_at, conversation_id)


LISTED = (
    Conversation.id,
    Conversation.status,
    Conversation.attempts,
    Conversation.last_error,
    Conversation.lane,
    Conversation.provider_batch,
    Conversation.occurred_at,
    Conversation.received_at,
    Conversation.updated_at,
)  # everything but the payload


def list_conversations(query: ConversationQuery) -> tuple[list[Conversation], tuple[datetime, str] | None]:
    """One page of the matching conversations, oldest first, and the cursor of the next page (if any)."""
    select = Conversation.select(*LISTED).where(
        Conversation.occurred_at >= query.start, Conversation.occurred_at < query.end
    )
    if query.status is not None:
        select = select.where(Conversation.status == query.status)
    if query.reason is not None:
        select = select.where(contains_any_case(Conversation.last_error, query.reason))
    if query.after is not None:
        select = select.where(Tuple(Conversation.occurred_at, Conversation.id) > Tuple(*query.after))
    page = list(select.order_by(Conversation.occurred_at, Conversation.id).limit(query.limit + 1))
    if len(page) <= query.limit:
        return page, None
    page = page[: query.limit]
    return page, (page[-1].occurred_at, page[-1].id)


@dataclass
class Stats:
    by_status: dict[str, int]
    oldest_waiting: datetime | None  # when the longest current wait began (enqueued_at), among open ones
    bulk: dict[str, int]  # the bulk lane's conversations: "queued" (for a provider batch) and "processing" (in one)
    provider_batches: dict[str, int]  # by state: open, submitted, ended
    usage: dict[str, usage.LaneUsage]  # tokens and cost by lane, of all time
    webhook_deliveries: dict[str, int]  # the webhooks' outbox by status: pending, delivered, failed (dead letters)


def lane_usage(start: datetime = datetime.min, end: datetime = datetime.max) -> dict[str, usage.LaneUsage]:
    """Tokens and cost of the insights that occurred in ``[start, end)`` for each lane (both always there)."""
    with counts.snapshot():
        return every_lane(usage.totals(start, end))


def every_lane(found: dict[str, usage.LaneUsage]) -> dict[str, usage.LaneUsage]:
    return {lane: found.get(lane, usage.LaneUsage()) for lane in LANES}


def stats() -> Stats:
    by_status = dict(
        Conversation.select(Conversation.status, fn.COUNT(Conversation.id)).group_by(Conversation.status).tuples()
    )
    webhook_counts = deliveries.counts()
    return Stats(
        {status: by_status.get(status, 0) for status in STATUSES},
        oldest_waiting(),
        provider_batches.bulk_depth(),
        {state: provider_batches.states().get(state, 0) for state in BATCH_STATES},
        lane_usage(),
        {status: webhook_counts.get(status, 0) for status in DELIVERY_STATUSES},
    )


def oldest_waiting(*conditions: Any) -> datetime | None:
    """When the longest current wait began among the open conversations (matching ``conditions``): from
    the last enqueue (acceptance, reprocessing, requeue), not from arrival, so reprocessing an old window
    does not read as days of waiting."""
    oldest = (
        Conversation.select(fn.MIN(Conversation.enqueued_at))
        .where(Conversation.status.in_(OPEN_STATUSES), *conditions)
        .scalar()
    )
    return datetime.fromisoformat(oldest) if isinstance(oldest, str) else oldest  # SQLite hands aggregates back as text


@dataclass
class Suggestion:
    cluster: str
    count: int
    examples: list[str]  # conversation ids, the latest first


def suggested_clusters(start: datetime, end: datetime, limit: int, examples: int = 3) -> list[Suggestion]:
    """The clusters a closed taxonomy's ``other`` suggested most often for conversations that occurred in
    ``[start, end)``, with some of their conversations: what the taxonomy may be missing."""
    count = fn.COUNT(Insight.conversation)
    window = (Insight.suggested_cluster.is_null(False), Insight.occurred_at >= start, Insight.occurred_at < end)
    top = (
        Insight.select(Insight.suggested_cluster, count)
        .where(*window)
        .group_by(Insight.suggested_cluster)
        .order_by(count.desc(), Insight.suggested_cluster)
        .limit(limit)
        .tuples()
    )
    return [
        Suggestion(
            cluster,
            total,
            [
                row[0]
                for row in (
                    Insight.select(Insight.conversation)
                    .where(*window, Insight.suggested_cluster == cluster)
                    .order_by(Insight.occurred_at.desc())
                    .limit(examples)
                    .tuples()
                )
            ],
        )
        for cluster, total in top
    ]


def seconds_since(moment: datetime | None) -> float:
    """Seconds from ``moment`` (naive UTC) to now; 0 for ``None``."""
    return max(0.0, (utcnow() - moment).total_seconds()) if moment else 0.0


@dataclass
class Summary:
    by_sentiment: dict[str, int]
    mean_sentiment: float | None
    top_clusters: list[tuple[str, int]]
    by_status: dict[str, int]
    top_failures: list[tuple[str, int]]
    oldest_waiting: datetime | None  # among the window's open conversations (see oldest_waiting)
    usage: dict[str, usage.LaneUsage]  # tokens and cost by lane


def summarize(start: datetime, end: datetime, thresholds: tuple[float, float], top: int) -> Summary:
    """What happened to the conversations that occurred in ``[start, end)``, in aggregate (read in one snapshot;
    sentiment counts and clusters of whole days come from the daily counts)."""
    with counts.snapshot():
        by_sentiment = {
            label: counts.count(start, end, counts.Filters(label, thresholds)) for label in counts.SENTIMENTS
        }
        insights = sum(by_sentiment.values())
        mean = counts.score_total(start, end) / insights if insights else None
        clusters = counts.cluster_totals(start, end)
        occurred = (Conversation.occurred_at >= start, Conversation.occurred_at < end)
        by_status = dict(
            Conversation.select(Conversation.status, fn.COUNT(Conversation.id))
            .where(*occurred)
            .group_by(Conversation.status)
            .tuples()
        )
        waiting_since = oldest_waiting(*occurred)
        by_lane = every_lane(usage.totals(start, end))
        count = fn.COUNT(Conversation.id)
        failures = list(
            Conversation.select(Conversation.last_error, count)
            .where(*occurred, Conversation.status == FAILED)
            .group_by(Conversation.last_error)
            .order_by(count.desc(), Conversation.last_error)
            .limit(top)
            .tuples()
        )
    return Summary(
        by_sentiment=by_sentiment,
        mean_sentiment=mean,
        top_clusters=sorted(clusters.items(), key=lambda item: (-item[1], item[0]))[:top],
        by_status={status: by_status.get(status, 0) for status in STATUSES},
        top_failures=[(reason or "(no reason recorded)", n) for reason, n in failures],
        oldest_waiting=waiting_since,
        usage=by_lane,
    )
