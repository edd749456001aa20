"""The read side: pages of insights, exports, summaries and what waits (one snapshot where it matters).

Writes and status moves live in ``store.queries`` and ``store.results``; whole-day counts in
``store.counts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from peewee import Tuple, fn

from store import counts
from store.models import FAILED, STATUSES, Conversation, Insight
from store.queries import OPEN_STATUSES


@dataclass
class InsightQuery:
    start: datetime
    end: datetime
    limit: int
    filters: counts.Filters = counts.Filters()
    after: tuple[datetime, str] | None = None  # keyset cursor: (received_at, conversation_id)


@dataclass
class InsightPage:
    insights: list[Insight]
    total_count: int
    next_after: tuple[datetime, str] | None


def _window(start: datetime, end: datetime, after: tuple[datetime, str] | None = None, *conditions: Any):
    """Insights received in ``[start, end)`` matching ``conditions``, after the keyset cursor ``after``."""
    query = Insight.select().where(Insight.received_at >= start, Insight.received_at < end, *conditions)
    if after is not None:
        query = query.where(Tuple(Insight.received_at, Insight.conversation) > Tuple(*after))
    return query


def _page_statement(query: InsightQuery):
    """The page, with one extra row that tells whether another page follows."""
    page = _window(query.start, query.end, query.after, *query.filters.conditions())
    return page.order_by(Insight.received_at, Insight.conversation).limit(query.limit + 1)


def explainable(query: InsightQuery) -> dict[str, tuple[str, list]]:
    """SQL and parameters of a page's statements, for ``EXPLAIN`` (see ``ops/bench_query.py``)."""
    return {"count": counts.count_statement(query.start, query.end, query.filters), "page": _page_statement(query).sql()}


def query_insights(query: InsightQuery) -> InsightPage:
    """One page of the insights received in ``[start, end)``, oldest first, and the count of all matches."""
    total = counts.count(query.start, query.end, query.filters)
    page = list(_page_statement(query))
    next_after = None
    if len(page) > query.limit:
        page = page[: query.limit]
        next_after = (page[-1].received_at, page[-1].conversation_id)
    return InsightPage(page, total, next_after)


def iter_insights(start: datetime, end: datetime, page_size: int = 1000) -> Iterator[Insight]:
    """Every insight received in ``[start, end)``, oldest first, read a page at a time (any size)."""
    after = None
    while True:
        page = list(_window(start, end, after).order_by(Insight.received_at, Insight.conversation).limit(page_size))
        yield from page
        if len(page) < page_size:
            return
        after = (page[-1].received_at, page[-1].conversation_id)


@dataclass
class Stats:
    by_status: dict[str, int]
    oldest_waiting: datetime | None  # received_at of the oldest queued or processing conversation


def stats() -> Stats:
    by_status = dict(Conversation.select(Conversation.status, fn.COUNT(Conversation.id)).group_by(Conversation.status).tuples())
    oldest = Conversation.select(fn.MIN(Conversation.received_at)).where(Conversation.status.in_(OPEN_STATUSES)).scalar()
    if isinstance(oldest, str):  # SQLite hands aggregates back as text
        oldest = datetime.fromisoformat(oldest)
    return Stats({status: by_status.get(status, 0) for status in STATUSES}, oldest)


@dataclass
class Summary:
    by_sentiment: dict[str, int]
    mean_sentiment: float | None
    top_clusters: list[tuple[str, int]]
    by_status: dict[str, int]
    top_failures: list[tuple[str, int]]


def summarize(start: datetime, end: datetime, thresholds: tuple[float, float], top: int) -> Summary:
    """What happened to the conversations received in ``[start, end)``, in aggregate (read in one snapshot;
    sentiment counts and clusters of whole days come from the daily counts)."""
    with counts.snapshot():
        by_sentiment = {label: counts.count(start, end, counts.Filters(label, thresholds)) for label in counts.SENTIMENTS}
        mean = Insight.select(fn.AVG(Insight.sentiment_score)).where(Insight.received_at >= start, Insight.received_at < end).scalar()
        clusters = counts.cluster_totals(start, end)
        received = (Conversation.received_at >= start, Conversation.received_at < end)
        by_status = dict(Conversation.select(Conversation.status, fn.COUNT(Conversation.id)).where(*received).group_by(Conversation.status).tuples())
        count = fn.COUNT(Conversation.id)
        failures = list(
            Conversation.select(Conversation.last_error, count)
            .where(*received, Conversation.status == FAILED)
            .group_by(Conversation.last_error)
            .order_by(count.desc(), Conversation.last_error)
            .limit(top)
            .tuples()
        )
    return Summary(
        by_sentiment=by_sentiment,
        mean_sentiment=float(mean) if mean is not None else None,
        top_clusters=sorted(clusters.items(), key=lambda item: (-item[1], item[0]))[:top],
        by_status={status: by_status.get(status, 0) for status in STATUSES},
        top_failures=[(reason or "(no reason recorded)", n) for reason, n in failures],
    )
