"""Trends: for each hour or UTC day of ``occurred_at``, how many insights, by sentiment, their mean
score and their top clusters, exact, empty buckets included.

Every measure adds up over parts of the window, so a window is read in parts and the parts added:

- whole days of a ``day`` trend come from the daily rollups (``store.counts``), the smallest that holds
  what the query asks: by day and score band (``insight_score_counts``), with the confidence band too
  under ``min_confidence`` (``insight_counts``), the same two per cluster for one ``cluster`` and for
  top clusters under a filter (``insight_cluster_score_counts``, ``insight_cluster_cells``, and
  ``insight_cluster_confidence_counts`` under ``min_confidence`` alone), by day and cluster for top
  clusters without one (``insight_cluster_counts``);
- hours, the partial days at the window's edges, and the confidence band a ``min_confidence`` off the
  grid splits are aggregated in the database from the insights themselves; an edge longer than half a
  day is read as its whole day less the rest of that day, so an edge never reads more than half a day.

A sentiment threshold off the grid makes every part come from the insights (as ``store.counts`` does).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from peewee import SQL, Case, PostgresqlDatabase, fn

from store import counts
from store.models import (
    Insight,
    InsightClusterCell,
    InsightClusterConfidenceCount,
    InsightClusterCount,
    InsightClusterScoreCount,
    InsightCount,
    InsightScoreCount,
    database,
)
from store.windows import whole_days

BUCKET_WIDTHS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


@dataclass(frozen=True)
class TrendQuery:
    start: datetime
    end: datetime
    bucket: str  # hour | day
    filters: counts.Filters = counts.Filters()
    cluster: str | None = None  # only the insights that name it (a slug)


@dataclass
class Bucket:
    """One hour or day of the window (clipped to it at the edges)."""

    start: datetime
    end: datetime
    by_sentiment: Counter = field(default_factory=lambda: Counter(dict.fromkeys(counts.SENTIMENTS, 0)))
    score_sum: float = 0.0
    clusters: Counter = field(default_factory=Counter)

    @property
    def count(self) -> int:
        return sum(self.by_sentiment.values())

    @property
    def mean_score(self) -> float | None:
        return self.score_sum / self.count if self.count else None

    def top_clusters(self, top: int) -> list[tuple[str, int]]:
        return sorted((+self.clusters).items(), key=lambda item: (-item[1], item[0]))[:top]


def bucket_start(moment: datetime, bucket: str) -> datetime:
    """The start of the hour or UTC day that holds ``moment``."""
    return (
        datetime.combine(moment.date(), time())
        if bucket == "day"
        else moment.replace(minute=0, second=0, microsecond=0)
    )


def bucket_count(start: datetime, end: datetime, bucket: str) -> int:
    """How many buckets ``[start, end)`` spans (the first and last may be partial)."""
    return -(-(end - bucket_start(start, bucket)) // BUCKET_WIDTHS[bucket])


def trends(query: TrendQuery) -> list[Bucket]:
    """The buckets of ``[query.start, query.end)``, oldest first, read in one snapshot."""
    width = BUCKET_WIDTHS[query.bucket]
    buckets: dict[datetime, Bucket] = {}
    moment = bucket_start(query.start, query.bucket)
    while moment < query.end:
        following = moment + width if moment < datetime.max - width else datetime.max  # the calendar's last day
        buckets[moment] = Bucket(max(moment, query.start), min(following, query.end))
        moment = following
    with counts.snapshot():
        first_day, end_day = whole_days(query.start, query.end)
        if query.bucket != "day" or first_day >= end_day or _grid_thresholds(query.filters) is None:
            _add_rows(buckets, query, query.start, query.end)
        else:
            _add_edge(buckets, query, query.start, first_day)
            _add_days(buckets, query, first_day.date(), end_day.date())
            _add_edge(buckets, query, end_day, query.end)
    return list(buckets.values())


def _grid_thresholds(filters: counts.Filters) -> tuple[int, int] | None:
    """The grid steps of the sentiment thresholds, or ``None`` when one is off the grid."""
    negative, positive = (counts.grid_step(threshold) for threshold in filters.thresholds)
    return None if negative is None or positive is None else (negative, positive)


def _add_days(buckets: dict[datetime, Bucket], query: TrendQuery, first_day: date, end_day: date) -> None:
    """Add the whole days ``[first_day, end_day)`` from the rollups (thresholds on the grid)."""
    negative, positive = _grid_thresholds(query.filters)
    scores = counts.score_bands(query.filters)
    confidences, split_band_top = counts.confidence_bands(query.filters.min_confidence)
    table = _cells_table(query)
    conditions = [table.day >= first_day, table.day < end_day, *scores.conditions(table.score_band)]
    if query.filters.min_confidence is not None:
        conditions.extend(confidences.conditions(table.confidence_band))
    if query.cluster is not None:
        conditions.append(table.cluster == query.cluster)
    band = table.score_band
    cells = (
        table.select(
            table.day,
            fn.SUM(table.total),
            fn.SUM(Case(None, [(band >= 2 * positive, table.total)], 0)),
            fn.SUM(Case(None, [(band <= 2 * negative, table.total)], 0)),
            fn.SUM(table.score_sum),
        )
        .where(*conditions)
        .group_by(table.day)
        .tuples()
    )
    for day, total, positives, negatives, score_sum in cells:  # a day's sentiments from its score bands
        bucket = buckets[datetime.combine(day, time())]
        bucket.by_sentiment.update(positive=positives, negative=negatives, neutral=total - positives - negatives)
        bucket.score_sum += score_sum
    if query.cluster is None:
        for day, cluster, total in _cluster_days(first_day, end_day, scores, confidences):
            buckets[datetime.combine(day, time())].clusters[cluster] += total
    if split_band_top is not None:  # the band min_confidence splits: its matches from the insights
        midnight = datetime.combine(first_day, time()), datetime.combine(end_day, time())
        _add_rows(buckets, query, *midnight, Insight.confidence < split_band_top)


def _cells_table(query: TrendQuery):
    """The smallest rollup that holds the whole days' counts and score sums for ``query``."""
    if query.cluster is not None:
        return InsightClusterScoreCount if query.filters.min_confidence is None else InsightClusterCell
    return InsightScoreCount if query.filters.min_confidence is None else InsightCount


def _cluster_days(first_day: date, end_day: date, scores: counts.BandRange, confidences: counts.BandRange):
    """``(day, cluster, total)`` of the days ``[first_day, end_day)``, among the insights in the bands,
    from the smallest rollup that holds them."""
    if scores == confidences == counts.BandRange():  # no filter: one row a day and cluster
        table = InsightClusterCount
        return (
            table.select(table.day, table.cluster, table.total)
            .where(table.day >= first_day, table.day < end_day)
            .tuples()
        )
    if scores == counts.BandRange():  # min_confidence alone
        table = InsightClusterConfidenceCount
        conditions = [table.day >= first_day, table.day < end_day, *confidences.conditions(table.confidence_band)]
    else:
        table = InsightClusterScoreCount if confidences == counts.BandRange() else InsightClusterCell
        conditions = [table.day >= first_day, table.day < end_day, *scores.conditions(table.score_band)]
        if table is InsightClusterCell:
            conditions.extend(confidences.conditions(table.confidence_band))
    return (
        table.select(table.day, table.cluster, fn.SUM(table.total))
        .where(*conditions)
        .group_by(table.day, table.cluster)
        .tuples()
    )


def _add_edge(buckets: dict[datetime, Bucket], query: TrendQuery, start: datetime, end: datetime) -> None:
    """Add ``[start, end)``, the part of one UTC day at an edge of the window, from the side that reads
    fewer insights: its own, or the whole day from the rollups less the insights of the rest of the day."""
    if start >= end:
        return
    midnight = datetime.combine(start.date(), time())
    if end - start <= timedelta(hours=12) or midnight.date() == date.max:
        _add_rows(buckets, query, start, end)
        return
    _add_days(buckets, query, midnight.date(), midnight.date() + timedelta(days=1))
    _add_rows(buckets, query, midnight, start, sign=-1)
    _add_rows(buckets, query, end, midnight + timedelta(days=1), sign=-1)


def _add_rows(
    buckets: dict[datetime, Bucket], query: TrendQuery, start: datetime, end: datetime, *extra: Any, sign: int = 1
) -> None:
    """Add (or, with ``sign`` -1, take away) the matching insights that occurred in ``[start, end)``,
    aggregated by the database."""
    if start >= end:
        return
    conditions = [Insight.occurred_at >= start, Insight.occurred_at < end, *query.filters.conditions(), *extra]
    if query.cluster is not None:  # a slug is [a-z0-9-]: its JSON string appears in the list only as that element
        conditions.append(Insight.clusters.contains(json.dumps(query.cluster)))
    key = _bucket_key(query.bucket)
    negative, positive = (
        counts.sentiment_condition(label, *query.filters.thresholds) for label in ("negative", "positive")
    )
    label = Case(None, [(positive, "positive"), (negative, "negative")], "neutral")
    rows = (
        Insight.select(key, label, fn.COUNT(SQL("*")), fn.SUM(Insight.sentiment_score))
        .where(*conditions)
        .group_by(SQL("1"), SQL("2"))
        .tuples()
    )
    for raw_key, sentiment, total, score_sum in rows:
        bucket = buckets[_parse_key(raw_key, query.bucket)]
        bucket.by_sentiment[sentiment] += sign * total
        bucket.score_sum += sign * score_sum
    if query.cluster is None:
        source, element = _cluster_elements()
        tally = (
            Insight.select(key, element, fn.COUNT(SQL("*")))
            .from_(Insight, source)
            .where(*conditions)
            .group_by(SQL("1"), SQL("2"))
            .tuples()
        )
        for raw_key, cluster, total in tally:
            buckets[_parse_key(raw_key, query.bucket)].clusters[cluster] += sign * total


def _postgres() -> bool:
    return isinstance(database.obj, PostgresqlDatabase)


def _bucket_key(bucket: str):
    """The bucket of an insight's ``occurred_at``, in SQL (SQLite stores it as ISO text)."""
    if _postgres():
        return fn.date_trunc(bucket, Insight.occurred_at)
    return fn.substr(Insight.occurred_at, 1, 10 if bucket == "day" else 13)


def _parse_key(raw: Any, bucket: str) -> datetime:
    if isinstance(raw, datetime):
        return raw
    return datetime.strptime(raw, "%Y-%m-%d" if bucket == "day" else "%Y-%m-%d %H")


def _cluster_elements():
    """A table source of each insight's clusters, one row per slug, and the column that holds it."""
    if _postgres():
        # json, not jsonb: the text is only split, not converted (twice as fast here)
        return fn.json_array_elements_text(Insight.clusters.cast("json")).alias("element"), SQL('"element"')
    return fn.json_each(Insight.clusters).alias("element"), SQL('"element"."value"')
