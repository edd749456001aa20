"""Exact counts of the insights matching a query, from a daily rollup for long windows.

Counting matches from an index costs about 50 ns an entry, so a window over a million insights takes
some 50 ms however good the index. The ``insight_counts`` table keeps, for each UTC day of
``received_at``, how many insights fall in each (sentiment-score band, confidence band) cell. A window's
count is the sum of the cells of its whole days plus an exact count from the insights table at its two
partial-day edges.

Bands are cut on a grid of steps of ``1 / GRID`` and respect comparisons exactly: band ``2k`` holds the
one value ``k / GRID``, band ``2k + 1`` the values strictly between ``k / GRID`` and ``(k + 1) / GRID``.
A threshold on the grid (the default sentiment thresholds -0.1 and 0.1, a ``min_confidence`` of 0.7)
therefore takes whole bands, whether the comparison is strict or not. A ``min_confidence`` off the grid
takes all of the bands above it and part of one: that part is counted exactly through the index that
leads with ``confidence``. A sentiment threshold off the grid makes every window count from the index
(correct, but as slow as before the rollup): keep the configured thresholds on the grid.

Every write of an insight records its move between cells (``CellChanges``) and applies it in the same
transaction, in one statement whose rows are sorted, so concurrent writers on PostgreSQL lock cells in
one order and cannot deadlock. ``rebuild`` recomputes the table from the insights (migration 0004, and
``insights counts --rebuild`` after writes that bypassed the store, such as a raw bulk load).
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Iterable, Iterator

from peewee import EXCLUDED, SQL, PostgresqlDatabase, Select, fn

from store.db import write_transaction
from store.models import Insight, InsightCount, database

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


def cell(received_at: datetime, sentiment_score: float, confidence: float) -> Cell:
    return received_at.date(), band(sentiment_score), band(confidence)


class CellChanges(Counter):
    """How the cells' totals move in one transaction: +1 for an insight stored, -1 for one replaced."""

    def add(self, received_at: datetime, sentiment_score: float, confidence: float, delta: int = 1) -> None:
        self[cell(received_at, sentiment_score, confidence)] += delta

    def apply(self) -> None:
        """Add the changes to ``insight_counts`` (inside the caller's transaction)."""
        rows = [(day, score, confidence, delta) for (day, score, confidence), delta in sorted(self.items()) if delta]
        if rows:
            (
                InsightCount.insert_many(rows, fields=[InsightCount.day, InsightCount.score_band, InsightCount.confidence_band, InsightCount.total])
                .on_conflict(
                    conflict_target=[InsightCount.day, InsightCount.score_band, InsightCount.confidence_band],
                    update={InsightCount.total: InsightCount.total + EXCLUDED.total},
                )
                .execute()
            )


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
    """Matches received in ``[start, end)``, counted from the insights' indexes."""
    return Insight.select(fn.COUNT(SQL("*"))).where(Insight.received_at >= start, Insight.received_at < end, *conditions)


def _cells_total(first_day: date, end_day: date, scores: BandRange, confidences: BandRange) -> Select:
    """The insights of the cells of days ``[first_day, end_day)`` in the given bands."""
    return InsightCount.select(fn.COALESCE(fn.SUM(InsightCount.total), 0)).where(
        InsightCount.day >= first_day, InsightCount.day < end_day,
        *scores.conditions(InsightCount.score_band), *confidences.conditions(InsightCount.confidence_band),
    )


def _whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``start`` rounded up to midnight and ``end`` rounded down: the whole days of ``[start, end)``
    lie between them (none when the first is not earlier than the second)."""
    first = datetime.combine(start.date(), time())
    if first < start:
        first = first + timedelta(days=1) if start.date() < date.max else datetime.max
    return first, datetime.combine(end.date(), time())


def _count_parts(start: datetime, end: datetime, filters: Filters) -> list[Select]:
    """Statements whose results add up to the number of insights received in ``[start, end)`` that
    match ``filters``."""
    first_day, end_day = _whole_days(start, end)
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
        statements.append(_exact_count(first_day, end_day, [*filters.conditions(), Insight.confidence < split_band_top]))
    return statements


def count_statement(start: datetime, end: datetime, filters: Filters) -> tuple[str, list]:
    """SQL and parameters of one statement that adds up the parts: one statement reads one snapshot, so
    an insight moved between cells by a commit meanwhile is counted once (separate statements could see
    it in both places, or in neither)."""
    parts = [part.sql() for part in _count_parts(start, end, filters)]
    return "SELECT " + " + ".join(f"({sql})" for sql, _params in parts), [p for _sql, params in parts for p in params]


def count(start: datetime, end: datetime, filters: Filters) -> int:
    """How many insights received in ``[start, end)`` (naive UTC) match ``filters``: exact, whatever the path."""
    return int(database.execute_sql(*count_statement(start, end, filters)).fetchone()[0])


def _days_with_insights() -> Iterator[datetime]:
    """Midnight of each UTC day from the oldest insight's to the newest's."""
    oldest = Insight.select(Insight.received_at).order_by(Insight.received_at).first()
    newest = Insight.select(Insight.received_at).order_by(Insight.received_at.desc()).first()
    if oldest is None:
        return
    day = datetime.combine(oldest.received_at.date(), time())
    while day <= newest.received_at:
        yield day
        day += timedelta(days=1)


def tally_insights() -> Counter:
    """Each cell's total, counted from the insights table a day at a time (memory stays bounded)."""
    columns = (Insight.received_at, Insight.sentiment_score, Insight.confidence)
    tally: Counter = Counter()
    for day in _days_with_insights():
        rows = Insight.select(*columns).where(Insight.received_at >= day, Insight.received_at < day + timedelta(days=1))
        tally.update(cell(*row) for row in rows.tuples())
    return tally


def stored_totals() -> Counter:
    """Each cell's total as ``insight_counts`` holds it (cells at zero left out)."""
    rows = InsightCount.select(InsightCount.day, InsightCount.score_band, InsightCount.confidence_band, InsightCount.total).tuples()
    return Counter({(day, score, confidence): total for day, score, confidence, total in rows.iterator() if total})


@contextlib.contextmanager
def _snapshot() -> Iterator[None]:
    """A read-only transaction in which every statement sees the same snapshot."""
    db = database.obj
    with db.atomic():
        if isinstance(db, PostgresqlDatabase):  # SQLite in WAL mode keeps one snapshot per transaction already
            db.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def drift() -> dict[Cell, tuple[int, int]]:
    """Cells whose stored total differs from the insights: ``{cell: (stored, counted)}``; empty when exact.
    Both are read in one snapshot, so writers committing meanwhile cannot make a difference appear."""
    with _snapshot():
        stored, counted = stored_totals(), tally_insights()
    return {key: (stored[key], counted[key]) for key in stored.keys() | counted.keys() if stored[key] != counted[key]}


def rebuild() -> int:
    """Recompute ``insight_counts`` from the insights, holding off writers of insights meanwhile; return
    how many cells it holds."""
    db = database.obj
    with write_transaction(db):
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql("LOCK TABLE insights IN SHARE MODE")
        InsightCount.delete().execute()
        changes = CellChanges(tally_insights())
        rows = sorted(changes.items())
        for offset in range(0, len(rows), 5000):
            CellChanges(dict(rows[offset:offset + 5000])).apply()
    return len(rows)
