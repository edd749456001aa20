"""``GET /api/v1/insights/trends``: per hour or UTC day of a window, how the insights move."""

from __future__ import annotations

import asyncio
import re

import falcon

from api import models as api
from api.documents import isoformat
from api.errors import bad_parameter
from api.insights import parse_filters
from api.params import parse_window
from insights.schemas import MAX_CLUSTER_CHARS
from settings import Settings
from store import trends
from store.db import call_and_release

TREND_PARAMETERS = {"start_time", "end_time", "bucket", "cluster", "sentiment", "min_confidence"}
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class TrendsResource:
    """Counts, counts by sentiment, mean score and top clusters for each bucket of ``[start_time, end_time)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = self.parse_query(req)
        buckets = await asyncio.to_thread(call_and_release, trends.trends, query)
        resp.media = api.dump(
            api.Trends(
                time_window=api.TimeWindow(start_time=isoformat(query.start), end_time=isoformat(query.end)),
                bucket=query.bucket,
                cluster=query.cluster,
                buckets=[self.document(bucket, query) for bucket in buckets],
            )
        )

    def document(self, bucket: trends.Bucket, query: trends.TrendQuery) -> api.TrendBucket:
        top = (
            None
            if query.cluster
            else [api.ClusterCount(cluster=name, count=n) for name, n in bucket.top_clusters(self.settings.trends_top)]
        )
        return api.TrendBucket(
            start_time=isoformat(bucket.start),
            end_time=isoformat(bucket.end),
            count=bucket.count,
            sentiment=api.SentimentSummary(counts=dict(bucket.by_sentiment), mean_score=bucket.mean_score),
            top_clusters=top,
        )

    def parse_query(self, req: falcon.Request) -> trends.TrendQuery:
        start, end = parse_window(req, TREND_PARAMETERS)
        bucket = req.get_param("bucket", default="day")
        if bucket not in trends.BUCKET_WIDTHS:
            raise bad_parameter("bucket", f"one of {', '.join(trends.BUCKET_WIDTHS)}, got {bucket!r}")
        spanned, most = trends.bucket_count(start, end, bucket), self.settings.trends_max_buckets
        if spanned > most:
            raise bad_parameter(
                "end_time",
                f"the window spans {spanned} buckets of a {bucket}; at most {most}: shorten it"
                f"{' or use bucket=day' if bucket == 'hour' else ''}",
            )
        cluster = req.get_param("cluster")
        if cluster is not None and not (len(cluster) <= MAX_CLUSTER_CHARS and SLUG.fullmatch(cluster)):
            raise bad_parameter(
                "cluster",
                f"a cluster slug (a-z, 0-9 and inner hyphens, at most {MAX_CLUSTER_CHARS} characters), got {cluster!r}",
            )
        return trends.TrendQuery(start, end, bucket, parse_filters(req, self.settings), cluster)
