"""``total_count`` through HTTP at day boundaries, on both databases: insights exactly at midnight and a
microsecond before ``end_time``, windows aligned on midnight and on partial days, against a plain count."""

from __future__ import annotations

from datetime import datetime, timedelta

from insights.schemas import AnalysisResult, InsightRow
from settings import load_settings
from store import claims, queries, results

SETTINGS = load_settings({})  # how a worker prices tokens and redacts reasons

MIDNIGHT = datetime(2026, 3, 10)
MICRO = timedelta(microseconds=1)


def store_insights(moments: list[datetime]) -> None:
    """Insights of conversations that occurred at ``moments`` (naive UTC) and arrive now, written by the
    store as the workers write them."""
    ids = [f"edge-{n}" for n in range(len(moments))]
    queries.insert_conversations(
        [queries.NewConversation.of(i, "{}", queries.utcnow(), at) for i, at in zip(ids, moments)]
    )
    claim = claims.claim_for_processing(ids, max_attempts=3)
    rows = [
        InsightRow(
            conversation_id=i,
            sentiment_score=(n % 5 - 2) / 2,
            clusters=["edge"],
            confidence=(n % 4) / 4,
            reasoning="edge",
        )
        for n, i in enumerate(ids)
    ]
    result = AnalysisResult(
        conversation_ids=ids, rows=rows, model="m", prompt_version="p", raw_response="{}", claim_token=claim.token
    )
    assert len(results.record_results(result, max_retries=3, settings=SETTINGS).completed) == len(ids)


def test_total_count_at_day_boundaries_equals_a_plain_count(db, make_stack, database_env):
    day = timedelta(days=1)
    store_insights(
        [
            MIDNIGHT - MICRO,
            MIDNIGHT,
            MIDNIGHT + MICRO,
            MIDNIGHT + day - MICRO,
            MIDNIGHT + day,
            MIDNIGHT + day + timedelta(hours=6),
            MIDNIGHT + 2 * day - MICRO,
            MIDNIGHT + 2 * day,
            MIDNIGHT + 3 * day - MICRO,
        ]
    )
    stack = make_stack(**database_env)
    client = stack.start_web()
    windows = [
        (MIDNIGHT, MIDNIGHT + day),  # one whole day: its first microsecond in, the next midnight out
        (MIDNIGHT, MIDNIGHT + 3 * day),  # whole days only
        (MIDNIGHT - MICRO, MIDNIGHT + 2 * day + MICRO),  # partial edges of a microsecond
        (MIDNIGHT + timedelta(hours=6), MIDNIGHT + 2 * day - MICRO),  # partial days, end just before an insight
        (MIDNIGHT + timedelta(hours=6), MIDNIGHT + 2 * day),  # ... and just after it
        (MIDNIGHT + day - MICRO, MIDNIGHT + day),  # one microsecond
        (MIDNIGHT - day, MIDNIGHT + 4 * day),  # all
    ]
    seen = set()
    for start, end in windows:
        for params in (
            {},
            {"min_confidence": "0.5"},
            {"sentiment": "negative"},
            {"min_confidence": "0.3", "sentiment": "positive"},
        ):
            answer = client.get(
                "/api/v1/insights",
                params={"start_time": start.isoformat() + "Z", "end_time": end.isoformat() + "Z", "limit": 1, **params},
            )
            assert answer.status_code == 200, answer.text
            expected = plain_count(stack, start, end, params)
            assert answer.json()["metadata"]["total_count"] == expected, (start, end, params)
            seen.add(expected)
    assert plain_count(stack, MIDNIGHT, MIDNIGHT + day, {}) == 3 and len(seen) >= 4, "the windows tell the edges apart"


def plain_count(stack, start: datetime, end: datetime, params: dict) -> int:
    sql = "SELECT COUNT(*) FROM insights WHERE occurred_at >= ? AND occurred_at < ?"
    args: list = [start, end]
    if "min_confidence" in params:
        sql, args = sql + " AND confidence >= ?", [*args, float(params["min_confidence"])]
    if params.get("sentiment") == "negative":
        sql += " AND sentiment_score <= -0.1"
    if params.get("sentiment") == "positive":
        sql += " AND sentiment_score >= 0.1"
    return stack.sql(sql, *args)[0][0]
