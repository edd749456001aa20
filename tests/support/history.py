"""A history of conversations for the rollup tests: occurred over days from :data:`EPOCH` (on and beside
midnights too), arrived now, analyzed through the store in batches with scores on and beside the grid of
the counts' bands, in this process."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from insights.schemas import AnalysisResult, InsightRow
from store import claims, counts, queries, results
from support.rows import SETTINGS

EPOCH = datetime(2026, 3, 1)
GRID_VALUES = [k / counts.GRID for k in range(-counts.GRID, counts.GRID + 1)]
THRESHOLDS = [(-0.1, 0.1), (-0.05, 0.25), (-0.12, 0.1)]  # the last is off the grid: the slow path
MIN_CONFIDENCES = [None, 0.0, 0.05, 0.051, 0.7, 0.73, 1.0]
CLUSTERS = ["billing", "shipping", "returns", "account-access"]


def near_the_grid(rng: random.Random, low: float) -> float:
    """Often exactly on the grid or one step of a double beside it, where a band boundary could slip."""
    on_grid = rng.choice([v for v in GRID_VALUES if v >= low])
    return rng.choice(
        [
            on_grid,
            min(1.0, math.nextafter(on_grid, 2)),
            max(low, math.nextafter(on_grid, -2)),
            round(rng.uniform(low, 1), 3),
        ]
    )


def store_round(rng: random.Random, ids: list[str]) -> None:
    """Analyze ``ids`` through the store, in batches, as the workers do."""
    for offset in range(0, len(ids), 50):
        chunk = ids[offset : offset + 50]
        claim = claims.claim_for_processing(chunk, max_attempts=10)
        rows = [
            InsightRow(
                conversation_id=i,
                sentiment_score=near_the_grid(rng, -1),
                clusters=rng.sample(CLUSTERS, rng.randrange(3)),
                confidence=near_the_grid(rng, 0),
                reasoning="r",
            )
            for i in chunk
        ]
        result = AnalysisResult(
            conversation_ids=chunk,
            rows=rows,
            rejected={},
            model="m",
            prompt_version="p",
            raw_response="{}",
            claim_token=claim.token,
        )
        results.record_results(result, max_retries=10, settings=SETTINGS)


def backfilled(conversation_id: str, occurred_at: datetime) -> queries.NewConversation:
    """A conversation that occurred at ``occurred_at`` and arrives now (history: windows must follow the former)."""
    return queries.NewConversation.of(conversation_id, "{}", queries.utcnow(), occurred_at)


def add_conversations(rng: random.Random, count: int, days: int) -> list[str]:
    ids = [f"c{n}" for n in range(count)]
    occurred = [EPOCH + timedelta(seconds=rng.uniform(0, days * 86_400)) for _ in ids]
    occurred[:3] = [
        EPOCH,
        EPOCH + timedelta(days=1),
        EPOCH + timedelta(days=2, microseconds=-1),
    ]  # on and beside midnights
    queries.insert_conversations([backfilled(i, moment) for i, moment in zip(ids, occurred)])
    return ids
