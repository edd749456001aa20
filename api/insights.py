"""``GET /api/v1/insights`` (a page of insights and their exact count) and ``GET /api/v1/insights/summary``."""

from __future__ import annotations

import asyncio

import falcon

from api import models as api
from api.documents import insight_document, isoformat, usage_document
from api.errors import bad_parameter
from api.params import decode_cursor, encode_cursor, parse_number, parse_window
from settings import Settings
from store import reports
from store.counts import SENTIMENTS, Filters
from store.db import call_and_release

INSIGHT_PARAMETERS = {"start_time", "end_time", "limit", "min_confidence", "sentiment", "cursor"}


class InsightsResource:
    """``GET /api/v1/insights``: insights of the conversations that occurred in ``[start_time, end_time)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = self.parse_query(req)
        page = await asyncio.to_thread(call_and_release, reports.query_insights, query)
        resp.media = api.dump(
            api.InsightsPage(
                insights=[insight_document(insight, self.settings) for insight in page.insights],
                metadata=api.PageMetadata(
                    total_count=page.total_count,
                    returned_count=len(page.insights),
                    time_window=api.TimeWindow(start_time=isoformat(query.start), end_time=isoformat(query.end)),
                    next_cursor=encode_cursor(page.next_after) if page.next_after else None,
                ),
            )
        )

    def parse_query(self, req: falcon.Request) -> reports.InsightQuery:
        start, end = parse_window(req, INSIGHT_PARAMETERS)
        cursor = req.get_param("cursor")
        return reports.InsightQuery(
            start=start,
            end=end,
            limit=parse_number(req, "limit", int, 1, self.settings.max_page_size, self.settings.default_page_size),
            filters=parse_filters(req, self.settings),
            after=decode_cursor(cursor) if cursor is not None else None,
        )


def parse_filters(req: falcon.Request, settings: Settings) -> Filters:
    """``sentiment`` and ``min_confidence``, with the configured thresholds."""
    sentiment = req.get_param("sentiment")
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise bad_parameter("sentiment", f"one of {', '.join(SENTIMENTS)}, got {sentiment!r}")
    return Filters(
        sentiment=sentiment,
        thresholds=(settings.negative_threshold, settings.positive_threshold),
        min_confidence=parse_number(req, "min_confidence", float, 0.0, 1.0, None),
    )


class SummaryResource:
    """``GET /api/v1/insights/summary``: aggregates of the conversations that occurred in the window."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        start, end = parse_window(req, {"start_time", "end_time"})
        thresholds = (self.settings.negative_threshold, self.settings.positive_threshold)
        summary = await asyncio.to_thread(
            call_and_release, reports.summarize, start, end, thresholds, self.settings.summary_top
        )
        resp.media = api.dump(
            api.Summary(
                time_window=api.TimeWindow(start_time=isoformat(start), end_time=isoformat(end)),
                sentiment=api.SentimentSummary(counts=summary.by_sentiment, mean_score=summary.mean_sentiment),
                top_clusters=[api.ClusterCount(cluster=name, count=n) for name, n in summary.top_clusters],
                conversations_by_status=summary.by_status,
                top_failure_reasons=[api.FailureCount(reason=reason, count=n) for reason, n in summary.top_failures],
                oldest_waiting_seconds=round(reports.seconds_since(summary.oldest_waiting), 3),
                usage={lane: usage_document(used) for lane, used in summary.usage.items()},
            )
        )
