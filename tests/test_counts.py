"""The daily insight counts behind ``total_count``, on SQLite and PostgreSQL: every count the rollup
gives equals a plain count of the insights table, through writes, replacements, rebuilds and migration."""

from __future__ import annotations

import itertools
import json
import math
import random
import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.history import EPOCH, MIN_CONFIDENCES, THRESHOLDS, add_conversations, backfilled, store_round
from support.rows import store_one

from store import counts, queries, rollup_check
from store.migrations import migrate
from store.models import Insight, InsightCount


def plain_count(start: datetime, end: datetime, filters: counts.Filters) -> int:
    return (
        Insight.select().where(Insight.occurred_at >= start, Insight.occurred_at < end, *filters.conditions()).count()
    )


def assert_counts_exact(rng: random.Random, windows: int, days: int) -> None:
    for _ in range(windows):
        start = EPOCH + timedelta(seconds=rng.uniform(-86_400, days * 86_400))
        if rng.random() < 0.3:
            start = start.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(
            seconds=rng.choice([rng.uniform(0, (days + 1) * 86_400), 86_400 * rng.randrange(1, days + 1)])
        )
        filters = counts.Filters(
            rng.choice([None, *counts.SENTIMENTS]), rng.choice(THRESHOLDS), rng.choice(MIN_CONFIDENCES)
        )
        assert counts.count(start, end, filters) == plain_count(start, end, filters), (start, end, filters)
        named = Counter(
            c
            for (encoded,) in Insight.select(Insight.clusters)
            .where(Insight.occurred_at >= start, Insight.occurred_at < end)
            .tuples()
            for c in json.loads(encoded)
        )
        assert counts.cluster_totals(start, end) == named, (start, end)


@settings(max_examples=500, derandomize=True, database=None)
@given(
    st.floats(min_value=-1, max_value=1, allow_nan=False), st.integers(min_value=-counts.GRID, max_value=counts.GRID)
)
def test_bands_agree_with_every_comparison_against_the_grid(value: float, step: int):
    threshold, cut = step / counts.GRID, 2 * step
    band = counts.band(value)
    assert (value >= threshold) == (band >= cut)
    assert (value <= threshold) == (band <= cut)
    assert (value > threshold) == (band > cut)
    assert (value < threshold) == (band < cut)


def test_bands_beside_grid_values():
    for step in range(-counts.GRID, counts.GRID + 1):
        on = step / counts.GRID
        assert counts.band(on) == 2 * step
        assert counts.band(math.nextafter(on, 2)) == 2 * step + 1
        assert counts.band(math.nextafter(on, -2)) == 2 * step - 1
    assert counts.grid_step(-0.1) == -2 and counts.grid_step(0.7) == 14 and counts.grid_step(0.73) is None


def test_counts_equal_a_plain_count_through_writes_and_replacements(db):
    rng = random.Random(11)
    ids = add_conversations(rng, 1500, days=6)
    store_round(rng, ids)
    assert_counts_exact(rng, windows=150, days=6)
    queries.reopen(ids[::2])  # reprocessing replaces insights: each moves to another cell
    store_round(rng, ids[::2])
    assert rollup_check.drift() == {}
    assert_counts_exact(rng, windows=150, days=6)
    assert InsightCount.select().count() > 0, "the whole days were counted from the rollup"
    for start, end in (
        (datetime.min, datetime.max),
        (datetime.max - timedelta(hours=20), datetime.max),
    ):  # calendar's ends
        for filters in (counts.Filters(), counts.Filters("neutral", min_confidence=0.33)):
            assert counts.count(start, end, filters) == plain_count(start, end, filters)


def test_rebuild_repairs_writes_that_bypassed_the_store(db):
    rng = random.Random(5)
    ids = add_conversations(rng, 300, days=3)
    store_round(rng, ids)
    Insight.update(sentiment_score=-1.0).where(Insight.conversation.in_(ids[:40])).execute()  # behind the rollup's back
    Insight.update(clusters='["refunds"]').where(Insight.conversation.in_(ids[40:60])).execute()
    drift = rollup_check.drift()
    assert all(stored != counted for stored, counted in drift.values())
    assert {len(key) for key in drift} == {2, 3, 4, 5}, "cells, clusters, cluster cells and score sums all found off"
    assert any(key[0] == "score_sum" for key in drift)
    assert counts.cluster_totals(EPOCH, EPOCH + timedelta(days=3))["refunds"] == 0
    everything = (EPOCH - timedelta(days=1), EPOCH + timedelta(days=5))
    negative = counts.Filters("negative")
    assert counts.count(*everything, negative) != plain_count(*everything, negative)
    rebuilt, stored = rollup_check.rebuild(), rollup_check.stored_totals()
    assert rebuilt == len(stored.cells) + len(stored.clusters) + len(stored.cluster_cells)
    assert rollup_check.drift() == {}
    assert counts.count(*everything, negative) == plain_count(*everything, negative)
    assert counts.cluster_totals(EPOCH, EPOCH + timedelta(days=3))["refunds"] == 20


def test_migration_fills_the_counts_from_insights_already_stored(db):
    rng = random.Random(9)
    store_round(rng, add_conversations(rng, 200, days=3))
    db.drop_tables([InsightCount])
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0004_insight_counts'")
    assert migrate(db) == ["0004_insight_counts"]
    assert rollup_check.drift() == {}
    assert sum(rollup_check.stored_totals().cells.values()) == 200


def test_concurrent_writers_keep_the_counts_exact(db):
    """Writers storing into the same cells at once (row locks on PostgreSQL) neither deadlock nor lose a
    change: each thread replaces insights again and again, in its own order."""
    rng = random.Random(3)
    ids = add_conversations(rng, 400, days=2)
    groups = [ids[n::4] for n in range(4)]
    errors: list[BaseException] = []

    def writer(group: list[str], seed: int) -> None:
        try:
            local = random.Random(seed)
            for _ in range(3):
                local.shuffle(group)
                store_round(local, group)
                queries.reopen(group)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            db.close()

    threads = [threading.Thread(target=writer, args=(group, seed)) for seed, group in enumerate(groups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert rollup_check.drift() == {}
    assert sum(rollup_check.stored_totals().cells.values()) == 400


def test_scores_are_stored_exactly_so_filters_on_grid_values_include_them(db):
    """0.7 stays 0.7 (PostgreSQL once kept 4-byte reals, which made ``min_confidence=0.7`` skip it)."""
    queries.insert_conversations([backfilled("exact", EPOCH)])
    store_one("exact", -0.1, 0.7, max_attempts=1)
    stored = Insight.get_by_id("exact")
    assert (stored.sentiment_score, stored.confidence) == (-0.1, 0.7)
    filters = counts.Filters("negative", (-0.1, 0.1), 0.7)
    assert counts.count(EPOCH - timedelta(days=2), EPOCH + timedelta(days=2), filters) == 1


def test_counts_and_checks_read_one_snapshot_while_an_insight_moves(db):
    """A writer moves one insight between confidence bands again and again (reprocessing it) while
    readers count and check: each read sees the insight exactly once, never in both cells or neither."""
    queries.insert_conversations([backfilled("moving", EPOCH + timedelta(days=2, hours=3))])

    def store(confidence: float) -> None:
        store_one("moving", 0.0, confidence, max_attempts=1000)
        queries.reopen(["moving"])

    store(0.9)
    stop = threading.Event()
    errors: list[BaseException] = []

    def move() -> None:
        try:
            for confidence in itertools.islice(itertools.cycle([0.72, 0.9]), 400):
                if stop.is_set():
                    return
                store(confidence)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            db.close()

    writer = threading.Thread(target=move)
    writer.start()
    window, filters = (
        (EPOCH + timedelta(hours=6), EPOCH + timedelta(days=4, hours=6)),
        counts.Filters(min_confidence=0.71),
    )
    try:
        seen = [counts.count(*window, filters) for _ in range(150)]
        drifts = [rollup_check.drift() for _ in range(20)]
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not errors, errors
    assert set(seen) == {1}, f"counted {sorted(set(seen))}"
    assert drifts == [{}] * len(drifts)


@pytest.mark.parametrize("database_env", ["postgres"], indirect=True)
def test_migration_restores_values_postgres_stored_as_4_byte_reals(db):
    store_round(random.Random(1), add_conversations(random.Random(1), 3, days=1))
    Insight.update(confidence=0.7, sentiment_score=-0.1).execute()
    for table in ("insights", "insight_history"):  # the schema before 0004: FloatField as real
        db.execute_sql(f"ALTER TABLE {table} ALTER COLUMN confidence TYPE real, ALTER COLUMN sentiment_score TYPE real")
    at_least = "SELECT COUNT(*) FROM insights WHERE confidence >= %s"
    assert db.execute_sql(at_least, (0.7,)).fetchone()[0] == 0, "a real 0.7 is below the double 0.7"
    db.drop_tables([InsightCount])
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0004_insight_counts'")
    assert migrate(db) == ["0004_insight_counts"]
    assert {(i.sentiment_score, i.confidence) for i in Insight.select()} == {(-0.1, 0.7)}
    assert db.execute_sql(at_least, (0.7,)).fetchone()[0] == 3
    filters = counts.Filters("negative", min_confidence=0.7)
    assert counts.count(EPOCH - timedelta(days=1), EPOCH + timedelta(days=3), filters) == 3
