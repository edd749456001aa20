"""What insights cost: what xAI billed (``cost_in_usd_ticks``), or else the table's price for the model
that answered in its lane; untrusted usage read safely, shared by the conversations of a call, and added
up by day and lane exactly (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from peewee import fn

from insights.costs import Tokens, cost_usd, tokens_of
from insights.schemas import AnalysisResult, InsightRow
from settings import get_settings, load_settings
from store import claims, counts, queries, reports, results, usage
from store.db import write_transaction
from store.migrations import migrate
from store.models import BULK, REALTIME, Conversation, Insight, InsightUsage, database

SETTINGS = load_settings({})  # how a worker prices tokens and redacts reasons

MODEL = "grok-4.3"  # priced in config.toml, in both lanes
DAY = datetime(2026, 3, 10)


@pytest.mark.parametrize(
    ("usage_object", "expected"),
    [
        (
            {"prompt_tokens": 1000, "completion_tokens": 200, "prompt_tokens_details": {"cached_tokens": 300}},
            Tokens(1000, 300, 200),
        ),
        (
            {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 99}},
            Tokens(10, 10, 2),
        ),
        ({"prompt_tokens": -5, "completion_tokens": True, "prompt_tokens_details": "x"}, None),
        ({"prompt_tokens": "100", "completion_tokens": 7}, Tokens(0, 0, 7)),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "completion_tokens_details": {"reasoning_tokens": 5},
                "cost_in_usd_ticks": 37756000,
            },
            Tokens(10, 0, 2, 5, 0.0037756),
        ),
        ({"prompt_tokens": 10, "completion_tokens": 2, "cost_in_usd_ticks": 0}, Tokens(10, 0, 2, 0, 0.0)),
        ({"prompt_tokens": 10, "completion_tokens": 2, "cost_in_usd_ticks": -3}, Tokens(10, 0, 2)),
        ({"prompt_tokens": 10, "completion_tokens": 2, "cost_in_usd_ticks": "9"}, Tokens(10, 0, 2)),
        ({"cost_in_usd_ticks": 120}, Tokens(billed_usd=1.2e-8)),
        ("not an object", None),
        (None, None),
    ],
)
def test_usage_is_untrusted_and_read_safely(usage_object, expected):
    assert tokens_of(usage_object) == expected


def test_the_billed_cost_wins_and_the_table_prices_the_answering_model_in_its_lane():
    settings = get_settings()
    price = settings.model_prices[MODEL]
    tokens = Tokens(prompt=2_000_000, cached=1_000_000, completion=500_000, reasoning=500_000)
    realtime, batch = (rates.input + rates.cached_input + rates.output for rates in (price.realtime, price.batch))
    assert cost_usd(tokens, MODEL, REALTIME, settings) == pytest.approx(realtime)
    assert cost_usd(tokens, MODEL, BULK, settings) == pytest.approx(batch) and batch == pytest.approx(realtime * 0.8)
    assert cost_usd(tokens, "grok-4-fast-non-reasoning", REALTIME, settings) == pytest.approx(realtime), (
        "a retired slug is billed as the model that serves it"
    )
    assert cost_usd(tokens, "grok-4.3-latest", BULK, settings) == pytest.approx(batch), "an alias is its model"
    assert cost_usd(tokens, "grok-4.6", BULK, settings) is None, "the Batch API does not take it: no batch price"
    assert cost_usd(tokens, "a-model-without-a-price", REALTIME, settings) is None
    billed = Tokens(prompt=2_000_000, completion=1_000_000, billed_usd=0.42)
    assert (
        cost_usd(billed, MODEL, REALTIME, settings)
        == cost_usd(billed, "a-model-without-a-price", BULK, settings)
        == 0.42
    )
    assert billed.divided(4).billed_usd == pytest.approx(0.105)


def accept(ids: list[str], lane: str, occurred_at: datetime) -> claims.Claim:
    news = [queries.NewConversation.of(i, f'{{"n": "{i}"}}', occurred_at, occurred_at, lane) for i in ids]
    assert set(queries.insert_conversations(news)) == {queries.InsertOutcome.CREATED}
    return claims.claim_for_processing(ids, max_attempts=5)


def analyzed(claim: claims.Claim, model: str = MODEL, usage_object: dict | None = None) -> AnalysisResult:
    ids = sorted(c.id for c in claim.conversations)  # the first gets no row
    return AnalysisResult(
        conversation_ids=ids,
        model=model,
        prompt_version="p",
        raw_response="{}",
        claim_token=claim.token,
        rows=[
            InsightRow(conversation_id=i, sentiment_score=0.2, clusters=["billing"], confidence=0.9, reasoning="r")
            for i in ids[1:]
        ],
        usage=usage_object
        or {"prompt_tokens": 4000, "completion_tokens": 800, "prompt_tokens_details": {"cached_tokens": 1000}},
    )


def direct_sums(start: datetime, end: datetime) -> dict[str, tuple]:
    """The same totals, straight from the insights table."""
    rows = (
        Insight.select(Insight.lane, fn.SUM(Insight.prompt_tokens), fn.SUM(Insight.cost_usd))
        .where(Insight.occurred_at >= start, Insight.occurred_at < end)
        .group_by(Insight.lane)
        .tuples()
    )
    return {lane: (prompt or 0, cost or 0) for lane, prompt, cost in rows}


def test_each_insight_carries_its_share_and_the_window_adds_them_up_by_lane(db):
    """Four conversations share a call: each insight records a quarter of its tokens (one of the four got
    no row, and its share is paid for but not stored). Totals by lane, from the daily rollup and the
    partial days at the edges, equal the sums over the insights, before and after a reprocess moves some
    insights from one lane to the other, and after a rebuild."""
    realtime = accept(["r1", "r2", "r3", "r4"], REALTIME, DAY + timedelta(hours=3))
    bulk = accept(["b1", "b2", "b3", "b4"], BULK, DAY + timedelta(days=1, hours=5))
    unpriced = accept(["u1", "u2"], BULK, DAY + timedelta(days=2, hours=1))
    for claim, model in ((realtime, MODEL), (bulk, MODEL), (unpriced, "a-model-without-a-price")):
        results.record_results(analyzed(claim, model), max_retries=5, settings=SETTINGS)

    r2 = Insight.get_by_id("r2")
    price = get_settings().model_prices[MODEL]
    assert (r2.prompt_tokens, r2.cached_tokens, r2.completion_tokens) == (1000, 250, 200)
    rates, batch_rates = price.realtime, price.batch
    assert r2.cost_usd == pytest.approx((750 * rates.input + 250 * rates.cached_input + 200 * rates.output) / 1e6)
    assert Insight.get_by_id("b2").cost_usd == pytest.approx(
        (750 * batch_rates.input + 250 * batch_rates.cached_input + 200 * batch_rates.output) / 1e6
    )
    assert Insight.get_by_id("u2").cost_usd is None

    def check(start: datetime, end: datetime) -> None:
        with counts.snapshot():
            found = reports.every_lane(usage.totals(start, end))
        expected = direct_sums(start, end)
        for lane in (REALTIME, BULK):
            prompt, cost = expected.get(lane, (0, 0))
            assert (found[lane].prompt_tokens, found[lane].cost_usd) == (pytest.approx(prompt), pytest.approx(cost)), (
                lane,
                start,
                end,
            )

    windows = [
        (DAY, DAY + timedelta(days=3)),
        (DAY + timedelta(hours=4), DAY + timedelta(days=2, hours=2)),
        (DAY - timedelta(days=1), DAY + timedelta(days=1, hours=5)),
    ]
    for window in windows:
        check(*window)
    whole = reports.lane_usage()
    assert (whole[REALTIME].insights, whole[BULK].insights, whole[BULK].priced) == (3, 4, 3)

    queries.reopen(["r2", "r3"], BULK)  # reprocessed in the bulk lane: their old insights leave the realtime totals
    results.record_results(
        analyzed(claims.claim_for_processing(["r1", "r2", "r3"], 5)), max_retries=5, settings=SETTINGS
    )
    for window in windows:
        check(*window)
    before = rollup_rows()
    with write_transaction(database.obj):
        usage.rebuild()
    rebuilt = rollup_rows()
    assert rebuilt.keys() == before.keys()
    for key, values in before.items():
        assert rebuilt[key] == pytest.approx(values, abs=1e-9), key


def rollup_rows() -> dict[tuple, tuple]:
    """``insight_usage`` without its rows at zero (a rebuild writes none; increments leave float noise)."""
    rows = {(str(day), lane): tuple(values) for day, lane, *values in InsightUsage.select().tuples()}
    return {key: values for key, values in rows.items() if any(abs(v) > 1e-9 for v in values)}


def test_the_upgrade_gives_earlier_rows_the_realtime_lane_and_no_cost(db):
    """A database of the release before lanes and costs (0007): its conversations and insights become
    real-time, its insights count as without a cost, and new work is stored with costs at once."""
    claim = accept(["before-1", "before-2"], REALTIME, DAY)
    results.record_results(
        analyzed(claim, usage_object={"prompt_tokens": 10, "completion_tokens": 2}), max_retries=5, settings=SETTINGS
    )
    db.execute_sql("DROP TABLE provider_batch_requests")
    for table in ("provider_batches", "insight_usage"):
        db.execute_sql(f"DROP TABLE {table}")
    db.execute_sql("DROP INDEX conversation_lane_status_enqueued_at")
    for table, columns in (
        ("conversations", ("lane", "provider_batch")),
        ("insights", ("lane", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")),
        ("insight_history", ("lane", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_usd")),
    ):
        for column in columns:
            db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute_sql("DELETE FROM schema_migrations WHERE name IN ('0008_bulk_lane', '0009_insight_usage')")

    assert migrate(db) == ["0008_bulk_lane", "0009_insight_usage"]
    assert {(c.lane, c.provider_batch) for c in Conversation.select()} == {(REALTIME, None)}
    assert {(i.lane, i.cost_usd) for i in Insight.select()} == {(REALTIME, None)}
    after = accept(["after"], BULK, DAY)
    results.record_results(
        analyzed(after), max_retries=5, settings=SETTINGS
    )  # one conversation, and its row is the first: none stored
    totals = reports.lane_usage()
    assert (totals[REALTIME].insights, totals[REALTIME].priced) == (1, 0), "the earlier insight, without a cost"
