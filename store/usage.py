"""Tokens and cost by day and lane: the ``insight_usage`` rollup.

Each insight carries its share of the tokens of the call that produced it, and their cost
(``insights.costs``). ``insight_usage`` adds them up for each UTC day of ``occurred_at`` and lane, in the
transaction that writes the insights (``store.rollups.RollupChanges`` carries these changes too), so a
window's totals are the rows of its whole days plus the insights of its two partial-day edges, as for the
counts. Insights stored before migration 0009 have no tokens: they count as insights without a cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from peewee import fn

from insights.costs import Tokens
from store.models import Insight, InsightUsage
from store.statements import add_totals
from store.windows import whole_days

MEASURES = ("insights", "priced", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")
"""What each (day, lane) row adds up: insights, those with a cost, their tokens, their cost."""


@dataclass
class LaneUsage:
    insights: int = 0
    priced: int = 0  # insights whose cost is known (their model has a price, and they report tokens)
    prompt_tokens: float = 0.0
    cached_tokens: float = 0.0
    completion_tokens: float = 0.0
    cost_usd: float = 0.0  # of the priced ones

    @property
    def cached_share(self) -> float | None:
        """The share of prompt tokens served by xAI's prompt cache; ``None`` without prompt tokens."""
        return min(1.0, self.cached_tokens / self.prompt_tokens) if self.prompt_tokens > 0 else None

    def add(self, values: Iterable[float]) -> None:
        for name, value in zip(MEASURES, values):
            setattr(self, name, getattr(self, name) + (value or 0))


class UsageChanges:
    """How ``insight_usage`` moves in one transaction: an insight stored adds its share, one replaced
    takes its own away."""

    def __init__(self) -> None:
        self.rows: defaultdict[tuple[date, str], list[float]] = defaultdict(lambda: [0.0] * len(MEASURES))

    def add(self, occurred_at: datetime, lane: str, tokens: Tokens | None, cost: float | None, delta: int = 1) -> None:
        tokens = tokens or Tokens()
        values = (1, cost is not None, tokens.prompt, tokens.cached, tokens.completion, cost or 0.0)
        row = self.rows[(occurred_at.date(), lane)]
        for index, value in enumerate(values):
            row[index] += delta * value

    def include(self, other: UsageChanges) -> None:
        for key, values in other.rows.items():
            row = self.rows[key]
            for index, value in enumerate(values):
                row[index] += value

    def apply(self) -> None:
        """Upsert the changes, rows sorted (one lock order for every writer, as in ``store.counts``)."""
        add_totals(
            InsightUsage,
            [InsightUsage.day, InsightUsage.lane],
            [getattr(InsightUsage, name) for name in MEASURES],
            {key: (int(insights), int(priced), *sums) for key, (insights, priced, *sums) in self.rows.items()},
        )


def _insight_sums(start: datetime, end: datetime) -> dict[str, LaneUsage]:
    """The measures of the insights that occurred in ``[start, end)``, by lane, from the insights."""
    sums = (
        fn.COUNT(Insight.conversation),
        fn.COUNT(Insight.cost_usd),
        fn.SUM(Insight.prompt_tokens),
        fn.SUM(Insight.cached_tokens),
        fn.SUM(Insight.completion_tokens),
        fn.SUM(Insight.cost_usd),
    )
    query = (
        Insight.select(Insight.lane, *sums)
        .where(Insight.occurred_at >= start, Insight.occurred_at < end)
        .group_by(Insight.lane)
    )
    totals: dict[str, LaneUsage] = defaultdict(LaneUsage)
    for lane, *values in query.tuples():
        totals[lane].add(values)
    return totals


def totals(start: datetime, end: datetime) -> dict[str, LaneUsage]:
    """Tokens and cost of the insights that occurred in ``[start, end)``, by lane: whole days from the
    rollup, partial days from the insights (call it inside ``store.counts.snapshot()``)."""
    first, end_day = whole_days(start, end)
    if first >= end_day:
        return _insight_sums(start, end)
    found: dict[str, LaneUsage] = defaultdict(LaneUsage)
    rows = (
        InsightUsage.select(InsightUsage.lane, *(fn.SUM(getattr(InsightUsage, name)) for name in MEASURES))
        .where(InsightUsage.day >= first.date(), InsightUsage.day < end_day.date())
        .group_by(InsightUsage.lane)
    )
    for lane, *values in rows.tuples():
        found[lane].add(values)
    for edge in (_insight_sums(start, first), _insight_sums(end_day, end)):
        for lane, usage in edge.items():
            found[lane].add(getattr(usage, name) for name in MEASURES)
    return found


def rebuild() -> None:
    """Recompute ``insight_usage`` from the insights (inside the caller's write transaction)."""
    InsightUsage.delete().execute()
    changes = UsageChanges()
    columns = (
        Insight.occurred_at,
        Insight.lane,
        Insight.prompt_tokens,
        Insight.cached_tokens,
        Insight.completion_tokens,
        Insight.cost_usd,
    )
    for occurred_at, lane, prompt, cached, completion, cost in Insight.select(*columns).tuples().iterator():
        changes.add(occurred_at, lane, Tokens(prompt or 0, cached or 0, completion or 0), cost)
    changes.apply()
