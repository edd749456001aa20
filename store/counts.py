"""Exact counts of the insights matching a query, from a daily rollup for long windows.

Counting matches from an index costs about 50 ns an entry, so a window over a million insights takes
some 50 ms however good the index. The ``insight_counts`` table keeps, for each UTC day of
``occurred_at``, how many insights fall in each (sentiment-score band, confidence band) cell. A window's
count is the sum of the cells of its whole days plus an exact count from the insights table at its two
partial-day edges.

Bands are cut on a grid of steps of ``1 / GRID`` and respect comparisons exactly: band ``2k`` holds the
one value ``k / GRID``, band ``2k + 1`` the values strictly between ``k / GRID`` and ``(k + 1) / GRID``.
A threshold on the grid (the default sentiment thresholds -0.1 and 0.1, a ``min_confidence`` of 0.7)
therefore takes whole bands, whether the comparison is strict or not. A ``min_confidence`` off the grid
takes all of the bands above it and part of one: that part is counted exactly through the index that
leads with ``confidence``. A sentiment threshold off the grid makes every window count from the index
(correct, but as slow as before the rollup): keep the configured thresholds on the grid.

Beside it, ``insight_cluster_counts`` keeps how many insights of each day name each cluster, for the
summary's top clusters; each cell also keeps the sum of its sentiment scores, for exact means; the
rollups that trends read beside these are described in ``store.trends``.

``store.rollups`` writes them all in the transaction that writes the insights; ``store.rollup_check``
checks them against the insights and rebuilds them (migrations 0004 and 0011, and ``insights counts``).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from peewee import SQL, PostgresqlDatabase, Select, fn

from store.models import Insight, InsightClusterCount, InsightCount, database
from store.windows import whole_days

GRID = 20  # bands are cut every 0.05
SENTIMENTS = ("positive", "neutral", "negative")

Cell = tuple[date, int, int]  # (day, score band, confidence band)


def band(value: float) -> int:
    """The band of ``value``: ``2k`` when it equals ``k / GRID``, ``2k + 1`` when strictly between."""
    k = math.floor(value * GRID)
    while value < k / GRID:  # the product may round across a grid line: settle by comparing with it
        k -= 1
    while value >= (k + 1) / GRID:
        k += 1
    return 2 * k if value == k / GRID else 2 * k + 1


def grid_step(threshold: float) -> int | None:
    """``k`` when ``threshold`` is exactly the grid value ``k / GRID``, else ``None``."""
    k = round(threshold * GRID)
    return k if k / GRID == threshold else None


def cell(occurred_at: datetime, sentiment_score: float, confidence: float) -> Cell:
    return occurred_at.date(), band(sentiment_score), band(confidence)


def sentiment_condition(label: str, negative: float, positive: float):
    """The insights whose score earns ``label`` (see ``insights.schemas.sentiment_label``)."""
    score = Insight.sentiment_score
    return {
        "positive": score >= positive,
        "negative": score <= negative,
        "neutral": (score > negative) & (score < positive),
    }[label]


@dataclass(frozen=True)
class Filters:
    """What an insight must satisfy besides its window."""

    sentiment: str | None = None  # positive | neutral | negative
    thresholds: tuple[float, float] = (-0.1, 0.1)  # (negative, positive)
    min_confidence: float | None = None

    def conditions(self) -> list[Any]:
        """The filters as conditions on ``Insight``."""
        conditions = []
        if self.min_confidence is not None:
            conditions.append(Insight.confidence >= self.min_confidence)
        if self.sentiment is not None:
            conditions.append(sentiment_condition(self.sentiment, *self.thresholds))
        return conditions


@dataclass(frozen=True)
class BandRange:
    """Bands ``low`` to ``high`` inclusive; ``None`` leaves that side open."""

    low: int | None = None
    high: int | None = None

    def conditions(self, column) -> list[Any]:
        conditions = []
        if self.low is not None:
            conditions.append(column >= self.low)
        if self.high is not None:
            conditions.append(column <= self.high)
        return conditions


def score_bands(filters: Filters) -> BandRange | None:
    """The score bands that hold only matches, or ``None`` when a threshold is off the grid."""
    if filters.sentiment is None:
        return BandRange()
    negative, positive = (grid_step(t) for t in filters.thresholds)
    if negative is None or positive is None:
        return None
    return {
        "positive": BandRange(low=2 * positive),
        "negative": BandRange(high=2 * negative),
        "neutral": BandRange(low=2 * negative + 1, high=2 * positive - 1),
    }[filters.sentiment]


def confidence_bands(min_confidence: float | None) -> tuple[BandRange, float | None]:
    """The confidence bands that hold only matches, and the grid value up to which the band below them
    holds some (``None`` when ``min_confidence`` is on the grid and no band is split)."""
    if min_confidence is None:
        return BandRange(), None
    lowest = band(min_confidence)
    if lowest % 2 == 0:  # exactly on the grid: its band and every one above
        return BandRange(low=lowest), None
    return BandRange(low=lowest + 1), (lowest + 1) // 2 / GRID


def _exact_count(start: datetime, end: datetime, conditions: Iterable[Any]) -> Select:
    """Matches that occurred in ``[start, end)``, counted from the insights' indexes."""
    return Insight.select(fn.COUNT(SQL("*"))).where(
        Insight.occurred_at >= start, Insight.occurred_at < end, *conditions
    )


def _cells_total(first_day: date, end_day: date, scores: BandRange, confidences: BandRange) -> Select:
    """The insights of the cells of days ``[first_day, end_day)`` in the given bands."""
    return InsightCount.select(fn.COALESCE(fn.SUM(InsightCount.total), 0)).where(
        InsightCount.day >= first_day,
        InsightCount.day < end_day,
        *scores.conditions(InsightCount.score_band),
        *confidences.conditions(InsightCount.confidence_band),
    )


def _count_parts(start: datetime, end: datetime, filters: Filters) -> list[Select]:
    """Statements whose results add up to the number of insights that occurred in ``[start, end)`` that
    match ``filters``."""
    first_day, end_day = whole_days(start, end)
    scores = score_bands(filters)
    if first_day >= end_day or scores is None:
        return [_exact_count(start, end, filters.conditions())]
    confidences, split_band_top = confidence_bands(filters.min_confidence)
    statements = [
        _cells_total(first_day.date(), end_day.date(), scores, confidences),
        _exact_count(start, first_day, filters.conditions()),
        _exact_count(end_day, end, filters.conditions()),
    ]
    if split_band_top is not None:  # the matches in the band that min_confidence splits, over the whole days
        statements.append(
            _exact_count(first_day, end_day, [*filters.conditions(), Insight.confidence < split_band_top])
        )
    return statements


def count_statement(start: datetime, end: datetime, filters: Filters) -> tuple[str, list]:
    """SQL and parameters of one statement that adds up the parts: one statement reads one snapshot, so
    an insight moved between cells by a commit meanwhile is counted once (separate statements could see
    it in both places, or in neither)."""
    parts = [part.sql() for part in _count_parts(start, end, filters)]
    return "SELECT " + " + ".join(f"({sql})" for sql, _params in parts), [p for _sql, params in parts for p in params]


def count(start: datetime, end: datetime, filters: Filters) -> int:
    """How many insights that occurred in ``[start, end)`` (naive UTC) match ``filters``: exact, whatever the path."""
    return int(database.execute_sql(*count_statement(start, end, filters)).fetchone()[0])


def score_total(start: datetime, end: datetime) -> float:
    """The sum of the sentiment scores of the insights that occurred in ``[start, end)``: whole days from
    the rollup, the partial days at the edges from the insights (call it inside ``snapshot()`` beside
    ``count`` for an exact mean)."""

    def of_rows(low: datetime, high: datetime) -> Select:
        return Insight.select(fn.COALESCE(fn.SUM(Insight.sentiment_score), 0)).where(
            Insight.occurred_at >= low, Insight.occurred_at < high
        )

    first_day, end_day = whole_days(start, end)
    if first_day >= end_day:
        return float(of_rows(start, end).scalar())
    days = InsightCount.select(fn.COALESCE(fn.SUM(InsightCount.score_sum), 0)).where(
        InsightCount.day >= first_day.date(), InsightCount.day < end_day.date()
    )
    return float(days.scalar()) + float(of_rows(start, first_day).scalar()) + float(of_rows(end_day, end).scalar())


def _clusters_of_rows(start: datetime, end: datetime) -> Counter:
    """How many insights that occurred in ``[start, end)`` name each cluster, read from the insights."""
    tally: Counter = Counter()
    for (encoded,) in (
        Insight.select(Insight.clusters)
        .where(Insight.occurred_at >= start, Insight.occurred_at < end)
        .tuples()
        .iterator()
    ):
        tally.update(json.loads(encoded))
    return tally


def cluster_totals(start: datetime, end: datetime) -> Counter:
    """How many insights that occurred in ``[start, end)`` name each cluster: whole days from the rollup, the
    partial days at the edges from the insights. Call it inside ``snapshot()`` to read one state."""
    first_day, end_day = whole_days(start, end)
    if first_day >= end_day:
        return _clusters_of_rows(start, end)
    total = fn.SUM(InsightClusterCount.total)
    days = (InsightClusterCount.day >= first_day.date(), InsightClusterCount.day < end_day.date())
    totals = Counter(
        dict(
            InsightClusterCount.select(InsightClusterCount.cluster, total)
            .where(*days)
            .group_by(InsightClusterCount.cluster)
            .tuples()
        )
    )
    totals.update(_clusters_of_rows(start, first_day))
    totals.update(_clusters_of_rows(end_day, end))
    return +totals  # clusters whose insights were all replaced sum to zero: left out


@contextlib.contextmanager
def snapshot() -> Iterator[None]:
    """A read-only transaction in which every statement sees the same snapshot."""
    db = database.obj
    with db.atomic():
        if isinstance(db, PostgresqlDatabase):  # SQLite in WAL mode keeps one snapshot per transaction already
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield
