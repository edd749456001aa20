"""GET /api/v1/insights/trends against real processes, on both databases: the buckets agree with the
insights the API lists, empty buckets are there, and every bad parameter is a 400 naming it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from support.traffic import conversation

TRENDS = "/api/v1/insights/trends"
DAY = datetime(2026, 5, 4, tzinfo=UTC)
TEXTS = ["I love it, thank you!", "Charged twice, awful, I want a refund.", "Where is my package tracking?", "ok"]


@pytest.fixture(scope="module")
def web(make_module_stack):
    return make_module_stack(INBOUND_RPS=100_000, TRENDS_MAX_BUCKETS=48).start_web()


def label(score: float) -> str:
    return "positive" if score >= 0.1 else "negative" if score <= -0.1 else "neutral"


def test_daily_and_hourly_trends_agree_with_the_insights(make_stack, database_env):
    stack = make_stack(BATCH_SIZE=10, BATCH_FLUSH_SECONDS=0.3, INBOUND_RPS=1000, **database_env)
    client = stack.start_web()
    moments = [
        DAY + timedelta(days=day, hours=hour)
        for day, hour in ((0, 1), (0, 1), (0, 13), (1, 23), (3, 0), (3, 5), (3, 5))
    ]
    bodies = [conversation(TEXTS[n % len(TEXTS)], occurred_at=moment.isoformat()) for n, moment in enumerate(moments)]
    ids = [
        r["conversation_id"]
        for r in client.post("/api/v1/conversations/batch", json={"conversations": bodies}).json()["results"]
    ]
    stack.start_worker()
    stack.settled(client, ids)
    window = {"start_time": DAY.isoformat(), "end_time": (DAY + timedelta(days=5)).isoformat()}
    insights = client.get("/api/v1/insights", params=window).json()["insights"]
    assert len(insights) == 7

    days = client.get(TRENDS, params=window).json()
    assert (days["bucket"], days["cluster"]) == ("day", None)
    assert [b["start_time"][:10] for b in days["buckets"]] == [
        "2026-05-04",
        "2026-05-05",
        "2026-05-06",
        "2026-05-07",
        "2026-05-08",
    ]
    for bucket in days["buckets"]:
        mine = [i for i in insights if bucket["start_time"] <= i["occurred_at"] < bucket["end_time"]]
        assert bucket["count"] == len(mine)
        assert bucket["sentiment"]["counts"] == {
            s: sum(label(i["sentiment_score"]) == s for i in mine) for s in ("positive", "neutral", "negative")
        }
        assert bucket["sentiment"]["mean_score"] == (
            pytest.approx(sum(i["sentiment_score"] for i in mine) / len(mine)) if mine else None
        )
        named = Counter(c for i in mine for c in i["clusters"])
        assert {c["cluster"]: c["count"] for c in bucket["top_clusters"]} == dict(named.most_common(5))
    assert [b["count"] for b in days["buckets"]] == [3, 1, 0, 3, 0], "the empty days are there"

    hours = client.get(
        TRENDS, params={"start_time": "2026-05-07T00:30:00Z", "end_time": "2026-05-07T06:00:00Z", "bucket": "hour"}
    ).json()
    assert [(b["start_time"], b["count"]) for b in hours["buckets"]] == [
        ("2026-05-07T00:30:00Z", 0),
        ("2026-05-07T01:00:00Z", 0),
        ("2026-05-07T02:00:00Z", 0),
        ("2026-05-07T03:00:00Z", 0),
        ("2026-05-07T04:00:00Z", 0),
        ("2026-05-07T05:00:00Z", 2),
    ]
    billing = client.get(
        TRENDS, params={**window, "cluster": "billing", "sentiment": "negative", "min_confidence": "0.1"}
    ).json()
    expected = [
        sum(
            1
            for i in insights
            if b["start_time"] <= i["occurred_at"] < b["end_time"]
            and "billing" in i["clusters"]
            and label(i["sentiment_score"]) == "negative"
            and i["confidence"] >= 0.1
        )
        for b in billing["buckets"]
    ]
    assert [b["count"] for b in billing["buckets"]] == expected and sum(expected) > 0
    assert {b["top_clusters"] is None for b in billing["buckets"]} == {True}


WINDOW = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"}


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"end_time": "2026-02-01T00:00:00Z"}, "start_time"),
        ({**WINDOW, "end_time": WINDOW["start_time"]}, "end_time"),
        ({**WINDOW, "bucket": "week"}, "bucket"),
        ({**WINDOW, "bucket": "hour", "end_time": "2026-01-03T00:00:01Z"}, "end_time"),  # 49 hours, over 48 buckets
        ({**WINDOW, "end_time": "2026-02-18T00:00:01Z"}, "end_time"),  # 49 days
        ({**WINDOW, "cluster": "Billing"}, "cluster"),
        ({**WINDOW, "cluster": "billing-"}, "cluster"),
        ({**WINDOW, "cluster": "a" * 49}, "cluster"),
        ({**WINDOW, "cluster": '"billing"'}, "cluster"),
        ({**WINDOW, "sentiment": "happy"}, "sentiment"),
        ({**WINDOW, "min_confidence": "1.5"}, "min_confidence"),
        ({**WINDOW, "limit": "10"}, "limit"),
    ],
)
def test_bad_trends_parameters_are_400_naming_the_parameter(web, params, parameter):
    response = web.get(TRENDS, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["parameter"]) == ("invalid_parameter", parameter)
    assert error["message"].startswith(parameter)


def test_the_longest_windows_allowed_and_the_ends_of_the_calendar(web):
    hours = web.get(TRENDS, params={**WINDOW, "bucket": "hour", "end_time": "2026-01-03T00:00:00Z"})
    assert hours.status_code == 200 and len(hours.json()["buckets"]) == 48
    last = web.get(TRENDS, params={"start_time": "9999-12-30T12:00:00Z", "end_time": "9999-12-31T23:59:59.999999Z"})
    assert [(b["start_time"], b["count"]) for b in last.json()["buckets"]] == [
        ("9999-12-30T12:00:00Z", 0),
        ("9999-12-31T00:00:00Z", 0),
    ]
    first = web.get(
        TRENDS,
        params={"start_time": "0001-01-01T00:00:00Z", "end_time": "0001-01-02T00:00:01Z", "sentiment": "neutral"},
    )
    assert [b["count"] for b in first.json()["buckets"]] == [0, 0]
