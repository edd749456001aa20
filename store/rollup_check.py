"""Checking and rebuilding the daily rollups of ``store.counts`` against the insights they count.

``drift`` compares them in one snapshot (``insights counts``); ``rebuild`` recomputes them, holding off
writers of insights meanwhile (migrations 0004 and 0006, ``insights counts --rebuild`` after writes that
bypassed the store, such as a raw bulk load).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, time, timedelta

from peewee import PostgresqlDatabase

from store.counts import snapshot
from store.db import write_transaction
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
from store.rollups import RollupChanges

ROLLUPS = (
    InsightCount,
    InsightScoreCount,
    InsightClusterCount,
    InsightClusterCell,
    InsightClusterScoreCount,
    InsightClusterConfidenceCount,
)
SCORE_SUM_TOLERANCE = 1e-6  # sums of floats added in another order differ by rounding, far below this


def _days_with_insights() -> Iterator[datetime]:
    """Midnight of each UTC day from the oldest insight's to the newest's."""
    oldest = Insight.select(Insight.occurred_at).order_by(Insight.occurred_at).first()
    newest = Insight.select(Insight.occurred_at).order_by(Insight.occurred_at.desc()).first()
    if oldest is None:
        return
    day = datetime.combine(oldest.occurred_at.date(), time())
    while day <= newest.occurred_at:
        yield day
        day += timedelta(days=1)


def tally_insights() -> RollupChanges:
    """Every day's cells and clusters, counted from the insights table a day at a time (memory stays
    bounded)."""
    columns = (Insight.occurred_at, Insight.sentiment_score, Insight.confidence, Insight.clusters)
    tally = RollupChanges()
    for day in _days_with_insights():
        rows = Insight.select(*columns).where(Insight.occurred_at >= day, Insight.occurred_at < day + timedelta(days=1))
        for occurred_at, sentiment_score, confidence, clusters in rows.tuples():
            tally.add(occurred_at, sentiment_score, confidence, json.loads(clusters))
    return tally


def stored_totals() -> RollupChanges:
    """The totals the rollup tables hold (rows counting no insight left out)."""
    stored = RollupChanges()
    cells = InsightCount.select(
        InsightCount.day,
        InsightCount.score_band,
        InsightCount.confidence_band,
        InsightCount.total,
        InsightCount.score_sum,
    )
    for day, score, confidence, total, score_sum in cells.tuples().iterator():
        if total:
            stored.cells[(day, score, confidence)], stored.score_sums[(day, score, confidence)] = total, score_sum
    clusters = InsightClusterCount.select(
        InsightClusterCount.day, InsightClusterCount.cluster, InsightClusterCount.total
    )
    stored.clusters.update({(day, cluster): total for day, cluster, total in clusters.tuples().iterator() if total})
    cluster_cells = InsightClusterCell.select(
        InsightClusterCell.cluster,
        InsightClusterCell.day,
        InsightClusterCell.score_band,
        InsightClusterCell.confidence_band,
        InsightClusterCell.total,
        InsightClusterCell.score_sum,
    )
    for *key, total, score_sum in cluster_cells.tuples().iterator():
        if total:
            stored.cluster_cells[tuple(key)], stored.cluster_score_sums[tuple(key)] = total, score_sum
    return stored


def _differences(kept: Counter, found: Counter, tolerance: float = 0.0) -> dict[tuple, tuple]:
    return {
        key: (kept[key], found[key]) for key in kept.keys() | found.keys() if abs(kept[key] - found[key]) > tolerance
    }


def _stored_sums(model, keys: list) -> tuple[Counter, Counter]:
    """What a rollup of counts and score sums holds: key -> count, and key -> score sum."""
    totals, sums = Counter(), Counter()
    for *key, total, score_sum in model.select(*keys, model.total, model.score_sum).tuples().iterator():
        if total:
            totals[tuple(key)], sums[tuple(key)] = total, score_sum
    return totals, sums


def drift() -> dict[tuple, tuple[float, float]]:
    """Rollup rows whose total differs from the insights: ``{key: (stored, counted)}``, keys being cells
    ``(day, score band, confidence band)``, ``(day, cluster)``, ``(cluster, day, score band, confidence
    band)``, ``("by_score", ...)`` for the rollups summed over confidence, ``("by_confidence", ...)``
    for the clusters' cells summed over scores, and the same keys tagged
    ``"score_sum"`` for sums of scores off by more than rounding; empty when exact. Both sides are read
    in one snapshot, so writers committing meanwhile cannot make a difference appear."""
    with snapshot():
        stored, counted = stored_totals(), tally_insights()
        by_score = _stored_sums(InsightScoreCount, [InsightScoreCount.day, InsightScoreCount.score_band])
        by_cluster_score = _stored_sums(
            InsightClusterScoreCount,
            [InsightClusterScoreCount.cluster, InsightClusterScoreCount.day, InsightClusterScoreCount.score_band],
        )
        by_confidence = InsightClusterConfidenceCount.select(
            InsightClusterConfidenceCount.day,
            InsightClusterConfidenceCount.confidence_band,
            InsightClusterConfidenceCount.cluster,
            InsightClusterConfidenceCount.total,
        )
        stored_by_confidence = Counter(
            {(day, band, cluster): total for day, band, cluster, total in by_confidence.tuples().iterator() if total}
        )
    found = {
        ("by_confidence", *key): values
        for key, values in _differences(stored_by_confidence, counted.by_cluster_confidence()).items()
    }
    for kept, tallied in (
        (stored.cells, counted.cells),
        (stored.clusters, counted.clusters),
        (stored.cluster_cells, counted.cluster_cells),
    ):
        found.update(_differences(kept, tallied))
    for (kept, kept_sums), (tallied, tallied_sums) in (
        (by_score, counted.by_score()),
        (by_cluster_score, counted.by_cluster_score()),
    ):
        found.update({("by_score", *key): values for key, values in _differences(kept, tallied).items()})
        found.update(
            {
                ("score_sum", "by_score", *key): values
                for key, values in _differences(kept_sums, tallied_sums, SCORE_SUM_TOLERANCE).items()
            }
        )
    for kept, tallied in (
        (stored.score_sums, counted.score_sums),
        (stored.cluster_score_sums, counted.cluster_score_sums),
    ):
        found.update(
            {("score_sum", *key): values for key, values in _differences(kept, tallied, SCORE_SUM_TOLERANCE).items()}
        )
    return found


def rebuild() -> int:
    """Recompute the rollup tables from the insights, holding off writers of insights meanwhile; return
    how many rows they hold."""
    db = database.obj
    with write_transaction(db):
        if isinstance(db, PostgresqlDatabase):
            db.execute_sql("LOCK TABLE insights IN SHARE MODE")
        for table in ROLLUPS:
            table.delete().execute()
        tally = tally_insights()
        tally.apply()
    return len(+tally.cells) + len(+tally.clusters) + len(+tally.cluster_cells)
