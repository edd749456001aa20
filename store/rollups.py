"""The write side of the daily rollups that ``store.counts`` and ``store.trends`` read.

Every write of an insight records its moves in a ``RollupChanges`` (+1 in its cells for an insight
stored, -1 for the one it replaces, its sentiment score added or taken away) and applies them in the same
transaction, in statements whose rows are sorted, so concurrent writers on PostgreSQL lock rows in one
order and cannot deadlock. The rollups summed over confidence (``insight_score_counts``,
``insight_cluster_score_counts``) are derived from the cells' changes as they are applied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from store import usage
from store.counts import cell
from store.models import (
    InsightClusterCell,
    InsightClusterConfidenceCount,
    InsightClusterCount,
    InsightClusterScoreCount,
    InsightCount,
    InsightScoreCount,
)
from store.statements import add_totals


class RollupChanges:
    """How the daily rollups move in one transaction: +1 for an insight stored, -1 for one replaced, and
    its sentiment score added or taken away."""

    def __init__(self) -> None:
        self.cells: Counter = Counter()  # Cell -> change of the count
        self.score_sums: Counter = Counter()  # Cell -> change of the score sum
        self.clusters: Counter = Counter()  # (day, cluster) -> change
        self.cluster_cells: Counter = Counter()  # (cluster, *Cell) -> change of the count
        self.cluster_score_sums: Counter = Counter()  # (cluster, *Cell) -> change of the score sum
        self.usage = usage.UsageChanges()  # tokens and cost by (day, lane)

    def add(
        self, occurred_at: datetime, sentiment_score: float, confidence: float, clusters: Iterable[str], delta: int = 1
    ) -> None:
        where = cell(occurred_at, sentiment_score, confidence)
        self.cells[where] += delta
        self.score_sums[where] += delta * sentiment_score
        for cluster in clusters:
            self.clusters[(where[0], cluster)] += delta
            self.cluster_cells[(cluster, *where)] += delta
            self.cluster_score_sums[(cluster, *where)] += delta * sentiment_score

    def include(self, other: RollupChanges) -> None:
        """Add ``other``'s changes to these (a row's, once it is stored for good)."""
        for mine, theirs in zip(self._counters(), other._counters()):
            mine.update(theirs)
        self.usage.include(other.usage)

    def by_score(self) -> tuple[Counter, Counter]:
        """The cells' changes added up over confidence: ``(day, score band)`` -> count, and -> score sum."""
        return _without_confidence(self.cells), _without_confidence(self.score_sums)

    def by_cluster_score(self) -> tuple[Counter, Counter]:
        """The same for the clusters' cells: ``(cluster, day, score band)`` -> count, and -> score sum."""
        return _without_confidence(self.cluster_cells), _without_confidence(self.cluster_score_sums)

    def by_cluster_confidence(self) -> Counter:
        """The clusters' cells summed over score bands: ``(day, confidence band, cluster)`` -> count."""
        summed: Counter = Counter()
        for (cluster, day, _score_band, confidence_band), delta in self.cluster_cells.items():
            summed[(day, confidence_band, cluster)] += delta
        return summed

    def _counters(self) -> tuple[Counter, ...]:
        return self.cells, self.score_sums, self.clusters, self.cluster_cells, self.cluster_score_sums

    def apply(self) -> None:
        """Add the changes to the rollup tables (inside the caller's transaction)."""
        cell_keys = [InsightCount.day, InsightCount.score_band, InsightCount.confidence_band]
        add_totals(
            InsightCount, cell_keys, [InsightCount.total, InsightCount.score_sum], _paired(self.cells, self.score_sums)
        )
        add_totals(
            InsightScoreCount,
            [InsightScoreCount.day, InsightScoreCount.score_band],
            [InsightScoreCount.total, InsightScoreCount.score_sum],
            _paired(*self.by_score()),
        )
        add_totals(
            InsightClusterCount,
            [InsightClusterCount.day, InsightClusterCount.cluster],
            [InsightClusterCount.total],
            {key: (delta,) for key, delta in self.clusters.items()},
        )
        cluster_keys = [
            InsightClusterCell.cluster,
            InsightClusterCell.day,
            InsightClusterCell.score_band,
            InsightClusterCell.confidence_band,
        ]
        add_totals(
            InsightClusterCell,
            cluster_keys,
            [InsightClusterCell.total, InsightClusterCell.score_sum],
            _paired(self.cluster_cells, self.cluster_score_sums),
        )
        by_score = InsightClusterScoreCount
        add_totals(
            by_score,
            [by_score.cluster, by_score.day, by_score.score_band],
            [by_score.total, by_score.score_sum],
            _paired(*self.by_cluster_score()),
        )
        by_confidence = InsightClusterConfidenceCount
        add_totals(
            by_confidence,
            [by_confidence.day, by_confidence.confidence_band, by_confidence.cluster],
            [by_confidence.total],
            {key: (delta,) for key, delta in self.by_cluster_confidence().items()},
        )
        self.usage.apply()


def _without_confidence(changes: Counter) -> Counter:
    """``changes`` of cells (whose keys end with the confidence band) added up over that band."""
    summed: Counter = Counter()
    for key, delta in changes.items():
        summed[key[:-1]] += delta
    return summed


def _paired(totals: Counter, score_sums: Counter) -> dict[tuple, tuple[int, float]]:
    return {key: (totals[key], score_sums[key]) for key in totals.keys() | score_sums.keys()}
