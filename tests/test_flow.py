"""The whole flow with real processes: POST -> batching stream -> pipeline -> completed -> insights API.

Runs on SQLite and on PostgreSQL, each with its own Redis database, web process and worker.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from support.traffic import conversation

POST = "/api/v1/conversations"
TEXTS = {
    "positive": "Thank you so much, the support was wonderful and I love the new plan. Great job!",
    "negative": "This is terrible. I was charged twice and nobody helps me. Awful, I am furious.",
    "neutral": "What is the tracking number of my package?",
}


@pytest.fixture
def flow(make_stack, database_env):
    stack = make_stack(BATCH_SIZE=4, BATCH_FLUSH_SECONDS=0.5, INBOUND_RPS=1000, **database_env)
    client = stack.start_web()
    stack.start_worker()
    return stack, client


def test_conversations_are_analyzed_in_batches_and_queryable(flow):
    stack, client = flow
    start = datetime.now(UTC) - timedelta(seconds=1)
    labels = ["positive"] * 5 + ["negative"] * 4 + ["neutral"] * 3
    ids = [client.post(POST, json=conversation(TEXTS[label])).json()["conversation_id"] for label in labels]
    end = datetime.now(UTC) + timedelta(seconds=1)

    documents = stack.settled(client, ids)
    assert [d["status"] for d in documents] == ["completed"] * 12, stack.log_text()
    for label, document in zip(labels, documents):
        insight = document["insight"]
        assert document["attempts"] == 1
        assert insight["sentiment"] == label, (label, insight)
        assert -1 <= insight["sentiment_score"] <= 1 and 0 <= insight["confidence"] <= 1
        assert insight["model"] == "offline-vader-taxonomy"
        assert insight["reasoning"]
    assert "billing" in documents[5]["insight"]["clusters"]  # "charged"
    assert "shipping" in documents[-1]["insight"]["clusters"]  # "tracking", "package"

    window = {"start_time": start.isoformat(), "end_time": end.isoformat()}
    everything = client.get("/api/v1/insights", params={**window, "limit": 1000}).json()
    assert everything["metadata"]["total_count"] == everything["metadata"]["returned_count"] == 12
    assert [i["conversation_id"] for i in everything["insights"]] == ids  # oldest first
    assert Counter(i["sentiment"] for i in everything["insights"]) == {"positive": 5, "negative": 4, "neutral": 3}

    negative = client.get("/api/v1/insights", params={**window, "sentiment": "negative"}).json()
    assert negative["metadata"]["total_count"] == 4
    assert {i["conversation_id"] for i in negative["insights"]} == set(ids[5:9])

    threshold = sorted(i["confidence"] for i in everything["insights"])[6]
    confident = client.get("/api/v1/insights", params={**window, "min_confidence": threshold}).json()
    expected = [i["conversation_id"] for i in everything["insights"] if i["confidence"] >= threshold]
    assert [i["conversation_id"] for i in confident["insights"]] == expected

    before = client.get("/api/v1/insights", params={"start_time": "2020-01-01", "end_time": start.isoformat()}).json()
    assert before["metadata"]["total_count"] == 0

    # Batches: every stored raw response is the analyzer's answer for one batch of at most BATCH_SIZE.
    placeholders = ", ".join("?" * len(ids))
    raws = stack.sql(f"SELECT raw_response FROM insights WHERE conversation_id IN ({placeholders})", *ids)
    batch_sizes = {len(json.loads(raw)["results"]) for (raw,) in raws}
    assert max(batch_sizes) <= 4
    assert max(batch_sizes) > 1, "conversations posted together should share batches"


def test_pages_cover_every_match_once(flow):
    stack, client = flow
    start = datetime.now(UTC) - timedelta(seconds=1)
    ids = [
        client.post(POST, json=conversation(f"Order {n} arrived, thanks!")).json()["conversation_id"] for n in range(9)
    ]
    stack.settled(client, ids)
    params = {
        "start_time": start.isoformat(),
        "end_time": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "limit": 4,
    }
    seen, pages = [], 0
    while True:
        page = client.get("/api/v1/insights", params=params).json()
        pages += 1
        assert page["metadata"]["total_count"] == 9
        assert page["metadata"]["returned_count"] == len(page["insights"]) <= 4
        seen += [i["conversation_id"] for i in page["insights"]]
        if page["metadata"]["next_cursor"] is None:
            break
        params["cursor"] = page["metadata"]["next_cursor"]
    assert pages == 3
    assert seen == ids


def test_a_lone_conversation_is_flushed_after_the_flush_interval(flow):
    stack, client = flow
    conversation_id = client.post(POST, json=conversation("Just one question.")).json()["conversation_id"]
    document = stack.settled(client, [conversation_id], timeout=30)[0]
    assert document["status"] == "completed"
