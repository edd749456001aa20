"""Trends (``store.trends``), on SQLite and PostgreSQL: every bucket equals a tally of the insights
themselves, whatever the window, bucket, filters and path (rollup days, row edges, a split confidence
band, thresholds off the grid), through replacements, a rebuild and the migration that adds the sums."""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from support.history import CLUSTERS, EPOCH, MIN_CONFIDENCES, THRESHOLDS, add_conversations, backfilled, store_round

from insights.schemas import sentiment_label
from store import counts, queries, rollup_check, trends
from store.migrations import migrate
from store.models import (
    Insight,
    InsightClusterCell,
    InsightClusterConfidenceCount,
    InsightClusterScoreCount,
    InsightScoreCount,
)


def tally(query: trends.TrendQuery) -> dict[datetime, tuple[Counter, float, Counter]]:
    """Per bucket start: counts by sentiment, the score sum and the clusters, from the insights one by one."""
    found: dict[datetime, tuple[Counter, float, Counter]] = {}
    window = Insight.select().where(
        Insight.occurred_at >= query.start, Insight.occurred_at < query.end, *query.filters.conditions()
    )
    for insight in window:
        clusters = json.loads(insight.clusters)
        if query.cluster is not None and query.cluster not in clusters:
            continue
        by_sentiment, score_sum, named = found.setdefault(
            trends.bucket_start(insight.occurred_at, query.bucket), (Counter(), 0.0, Counter())
        )
        by_sentiment[sentiment_label(insight.sentiment_score, *query.filters.thresholds)] += 1
        named.update(clusters)
        found[trends.bucket_start(insight.occurred_at, query.bucket)] = (
            by_sentiment,
            score_sum + insight.sentiment_score,
            named,
        )
    return found


def assert_trends_exact(query: trends.TrendQuery) -> None:
    buckets = trends.trends(query)
    assert len(buckets) == trends.bucket_count(query.start, query.end, query.bucket)
    assert buckets[0].start == query.start and buckets[-1].end == query.end, "clipped to the window"
    assert all(a.end == b.start for a, b in zip(buckets, buckets[1:])), "contiguous, empty ones included"
    expected = tally(query)
    for bucket in buckets:
        by_sentiment, score_sum, named = expected.pop(
            trends.bucket_start(bucket.start, query.bucket), (Counter(), 0.0, Counter())
        )
        assert +bucket.by_sentiment == by_sentiment, (query, bucket.start)
        assert bucket.score_sum == pytest.approx(score_sum, abs=1e-9), (query, bucket.start)
        assert bucket.mean_score == (pytest.approx(score_sum / bucket.count, abs=1e-12) if bucket.count else None)
        if query.cluster is None:
            assert +bucket.clusters == named, (query, bucket.start)
    assert not expected, "every insight fell in a bucket"


def assert_score_total_exact(query: trends.TrendQuery) -> None:
    """The summary's mean: the window's score sum, whatever its filters (it takes none)."""
    scores = Insight.select(Insight.sentiment_score).where(
        Insight.occurred_at >= query.start, Insight.occurred_at < query.end
    )
    assert counts.score_total(query.start, query.end) == pytest.approx(sum(s for (s,) in scores.tuples()), abs=1e-9)


def random_query(rng: random.Random, days: int) -> trends.TrendQuery:
    bucket = rng.choice(["day", "day", "hour"])
    start = EPOCH + timedelta(seconds=rng.uniform(-86_400, days * 86_400))
    if rng.random() < 0.3:
        start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    longest = (days + 1) * 86_400 if bucket == "day" else 30 * 3600
    end = start + timedelta(seconds=rng.choice([rng.uniform(1, longest), 86_400 * rng.randrange(1, days + 1)]))
    filters = counts.Filters(
        rng.choice([None, *counts.SENTIMENTS]), rng.choice(THRESHOLDS), rng.choice(MIN_CONFIDENCES)
    )
    return trends.TrendQuery(start, end, bucket, filters, rng.choice([None, None, *CLUSTERS]))


def test_trends_equal_a_tally_of_the_insights_through_writes_and_replacements(db):
    rng = random.Random(21)
    ids = add_conversations(rng, 1200, days=5)
    store_round(rng, ids)
    for _ in range(60):
        query = random_query(rng, days=5)
        assert_trends_exact(query)
        assert_score_total_exact(query)
    queries.reopen(ids[::3])  # reprocessing replaces insights: each moves to another cell, with another score
    store_round(rng, ids[::3])
    assert rollup_check.drift() == {}
    for _ in range(40):
        assert_trends_exact(random_query(rng, days=5))


def test_whole_days_come_from_the_rollups(db):
    """Insights written behind the store's back are invisible to whole days (so those came from the
    rollup), but not to the partial edges, until a rebuild."""
    rng = random.Random(4)
    store_round(rng, add_conversations(rng, 200, days=3))
    Insight.update(sentiment_score=1.0, clusters='["refunds"]').execute()
    query = trends.TrendQuery(EPOCH, EPOCH + timedelta(days=3), "day", counts.Filters())
    assert [b.clusters["refunds"] for b in trends.trends(query)] == [0, 0, 0]
    edges = trends.TrendQuery(EPOCH + timedelta(hours=1), EPOCH + timedelta(hours=23), "day", counts.Filters())
    assert trends.trends(edges)[0].clusters["refunds"] > 0
    rollup_check.rebuild()
    assert_trends_exact(query)
    assert all(b.mean_score == 1.0 for b in trends.trends(query))


def test_an_empty_window_has_every_bucket_at_zero(db):
    query = trends.TrendQuery(datetime(2030, 1, 1, 10, 30), datetime(2030, 1, 3, 2), "hour", counts.Filters())
    buckets = trends.trends(query)
    assert (
        len(buckets) == 40
        and buckets[0].start == datetime(2030, 1, 1, 10, 30)
        and buckets[1].start == datetime(2030, 1, 1, 11)
    )
    assert {(b.count, b.mean_score, tuple(b.top_clusters(5))) for b in buckets} == {(0, None, ())}
    days = trends.trends(
        trends.TrendQuery(datetime(2030, 1, 1), datetime(2030, 4, 1), "day", counts.Filters("negative"))
    )
    assert len(days) == 90 and sum(b.count for b in days) == 0


def test_the_migration_fills_score_sums_and_cluster_cells_from_insights_already_stored(db):
    """A database of the release before trends (0010): its counts gain score sums and its clusters
    their cells, so trends over its history are exact at once."""
    rng = random.Random(8)
    store_round(rng, add_conversations(rng, 300, days=3))
    db.drop_tables([InsightClusterCell, InsightScoreCount, InsightClusterScoreCount, InsightClusterConfidenceCount])
    db.execute_sql("DROP INDEX insightcount_day_score_band_confidence_band_total_score_sum")
    db.execute_sql("ALTER TABLE insight_counts DROP COLUMN score_sum")
    db.execute_sql(
        "CREATE INDEX insightcount_day_score_band_confidence_band_total ON insight_counts (day, score_band, "
        "confidence_band, total)"
    )
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0011_trend_rollups'")
    assert migrate(db) == ["0011_trend_rollups"]
    assert rollup_check.drift() == {}
    assert {index.name for index in db.get_indexes("insight_counts")} >= {
        "insightcount_day_score_band_confidence_band_total_score_sum"
    }
    for cluster in (None, "billing"):
        assert_trends_exact(
            trends.TrendQuery(
                EPOCH, EPOCH + timedelta(days=3), "day", counts.Filters("positive", min_confidence=0.5), cluster
            )
        )


@pytest.mark.parametrize(
    ("start", "end", "bucket"),
    [
        (EPOCH, EPOCH + timedelta(days=1), "hour"),  # the rows of a window that ends at a midnight
        (EPOCH + timedelta(hours=12), EPOCH + timedelta(days=2), "day"),  # a short first edge, then a rollup day
        (EPOCH, EPOCH + timedelta(days=1, hours=18), "day"),  # a long last edge: its day less its rest
        (EPOCH + timedelta(hours=6), EPOCH + timedelta(days=1), "day"),  # a long first edge that ends at midnight
        (EPOCH, EPOCH + timedelta(days=2), "day"),  # whole days only
    ],
)
def test_an_insight_exactly_at_midnight_is_in_one_bucket(db, start, end, bucket):
    """A date-only ``occurred_at`` is a midnight: windows are ``[start, end)`` on every path, so such an
    insight is counted once, in the day (or hour) it opens, and not in a window that ends there."""
    midnights = [EPOCH + timedelta(days=n) for n in range(3)]
    queries.insert_conversations([backfilled(f"m{n}", moment) for n, moment in enumerate(midnights)])
    store_round(random.Random(5), [f"m{n}" for n in range(3)])
    query = trends.TrendQuery(start, end, bucket, counts.Filters())
    assert_trends_exact(query)
    assert sum(b.count for b in trends.trends(query)) == sum(start <= m < end for m in midnights)
