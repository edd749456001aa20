"""POST /api/v1/conversations/batch and GET /api/v1/insights/summary against real processes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from support.traffic import conversation

BATCH = "/api/v1/conversations/batch"


@pytest.fixture(scope="module")
def web(make_module_stack):
    return make_module_stack(INBOUND_RPS=100_000).start_web()


def test_each_item_of_a_batch_gets_its_own_result(make_stack, database_env):
    stack = make_stack(INBOUND_RPS=100_000, **database_env)
    client = stack.start_web()
    assert client.post("/api/v1/conversations", json=conversation("seen", conversation_id="known")).status_code == 202
    items = [
        conversation("fresh one"),
        conversation("seen", conversation_id="known"),
        conversation("changed", conversation_id="known"),
        {"messages": []},
        "not even an object",
        conversation("fresh two", conversation_id="batch-2"),
        conversation("fresh two", conversation_id="batch-2"),
    ]
    response = client.post(BATCH, json={"conversations": items})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "duplicate",
        "conflict",
        "invalid",
        "invalid",
        "accepted",
        "duplicate",
    ]
    assert [r["index"] for r in results] == list(range(7))
    assert results[0]["conversation_id"].startswith("conv_")
    assert results[3]["errors"][0]["path"] == "messages"
    assert response.json()["summary"] == {"accepted": 2, "duplicate": 2, "conflict": 1, "invalid": 2}
    assert client.get(f"/api/v1/conversations/{results[0]['conversation_id']}").json()["status"] == "queued"
    sent = sorted((json.loads(raw)["args"][0] for raw in stack.redis.hvals("insights:collect.msgs")), key=len)
    assert sent == [["known"], [results[0]["conversation_id"], "batch-2"]], (
        "one message per commit, not per conversation"
    )


def test_batch_is_no_conversation_id(web):
    """``/api/v1/conversations/batch`` is the batch endpoint: a conversation of that id could never be read."""
    single = web.post("/api/v1/conversations", json=conversation("mine", conversation_id="batch"))
    assert single.status_code == 422, single.text
    assert [f["path"] for f in single.json()["error"]["fields"]] == ["conversation_id"]
    batched = web.post(BATCH, json={"conversations": [conversation("mine", conversation_id="batch")]}).json()["results"]
    assert batched[0]["status"] == "invalid" and batched[0]["errors"][0]["path"] == "conversation_id"
    assert web.post("/api/v1/conversations", json=conversation("mine", conversation_id="batch-1")).status_code == 202


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"conversations": []}, 422, "validation_failed"),
        ({"conversations": [conversation()] * 1001}, 422, "validation_failed"),
        ({"items": [conversation()]}, 422, "validation_failed"),
        (b"[", 400, "invalid_json"),
    ],
)
def test_bad_batches_are_refused_whole(web, body, status, code):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = web.post(BATCH, **kwargs)
    assert response.status_code == status and response.json()["error"]["code"] == code


def test_a_batch_body_over_its_limit_is_413_whether_announced_or_streamed(make_stack):
    stack = make_stack(INBOUND_RPS=100_000, MAX_BATCH_BODY_BYTES=50_000)
    client = stack.start_web()
    body = json.dumps({"conversations": [conversation("x" * 10_000) for _ in range(6)]}).encode()
    announced = client.post(BATCH, content=body, headers={"content-type": "application/json"})
    streamed = client.post(
        BATCH, content=iter([body[:30_000], body[30_000:]]), headers={"content-type": "application/json"}
    )
    for response in (announced, streamed):
        assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["max_body_bytes"] == 50_000
    assert stack.sql("SELECT COUNT(*) FROM conversations")[0][0] == 0


def test_batch_items_count_against_the_inbound_limit(make_stack):
    stack = make_stack(INBOUND_RPS=5)
    client = stack.start_web()
    response = client.post(BATCH, json={"conversations": [conversation(f"n{n}") for n in range(8)]})
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == ["accepted"] * 5 + ["rate_limited"] * 3
    assert int(response.headers["retry-after"]) >= 1
    refused = client.post(BATCH, json={"conversations": [conversation("one more")]})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert client.post("/api/v1/conversations", json=conversation("single")).status_code == 429


def test_summary_of_a_window(make_stack, database_env):
    stack = make_stack(BATCH_SIZE=10, BATCH_FLUSH_SECONDS=0.3, INBOUND_RPS=1000, **database_env)
    client = stack.start_web()
    start = datetime.now(UTC) - timedelta(seconds=1)
    texts = (
        ["I love it, thank you!"] * 3
        + ["Charged twice, awful, I want a refund."] * 2
        + ["Where is my package tracking?"]
    )
    results = client.post(BATCH, json={"conversations": [conversation(t) for t in texts]}).json()["results"]
    ids = [r["conversation_id"] for r in results]
    stack.start_worker()
    stack.settled(client, ids)
    window = {"start_time": start.isoformat(), "end_time": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}

    summary = client.get("/api/v1/insights/summary", params=window).json()
    assert summary["sentiment"]["counts"] == {"positive": 3, "neutral": 1, "negative": 2}
    insights = client.get("/api/v1/insights", params=window).json()["insights"]
    assert summary["sentiment"]["mean_score"] == pytest.approx(sum(i["sentiment_score"] for i in insights) / 6)
    top = {c["cluster"]: c["count"] for c in summary["top_clusters"]}  # "I love it" fits no cluster: "other"
    assert (top["other"], top["billing"], top["shipping"]) == (3, 2, 1)
    assert summary["conversations_by_status"] == {"queued": 0, "processing": 0, "completed": 6, "failed": 0}
    assert summary["top_failure_reasons"] == []

    empty = client.get("/api/v1/insights/summary", params={"start_time": "2020-01-01", "end_time": "2020-01-02"}).json()
    assert empty["sentiment"] == {"counts": {"positive": 0, "neutral": 0, "negative": 0}, "mean_score": None}
    bad = client.get("/api/v1/insights/summary", params={"start_time": "2020-01-02", "end_time": "2020-01-01"})
    assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "end_time"


def test_resending_a_partly_accepted_batch_makes_progress(make_stack, database_env):
    """Items already accepted take no inbound slot: each resend after Retry-After accepts more."""
    stack = make_stack(INBOUND_RPS=5, **database_env)
    client = stack.start_web()
    body = {"conversations": [conversation(f"backfill {n}", conversation_id=f"bf-{n}") for n in range(12)]}
    rounds = []
    while not rounds or rounds[-1].get("rate_limited"):
        assert len(rounds) < 4, f"no progress: {rounds}"
        response = client.post(BATCH, json=body)
        assert response.status_code == 200, response.text
        rounds.append(response.json()["summary"])
        if "retry-after" in response.headers:
            time.sleep(int(response.headers["retry-after"]))  # what a client is told to do
    assert rounds == [
        {"accepted": 5, "rate_limited": 7},
        {"duplicate": 5, "accepted": 5, "rate_limited": 2},
        {"duplicate": 10, "accepted": 2},
    ]
    fillers = client.post(BATCH, json={"conversations": [conversation(f"filler {n}") for n in range(5)]}).json()
    assert fillers["summary"]["rate_limited"] >= 1, "the limit is used up"
    again = client.post("/api/v1/conversations", json=conversation("backfill 0", conversation_id="bf-0"))
    assert again.status_code == 202, "a resent single POST of an accepted conversation is answered, not limited"
    changed = client.post("/api/v1/conversations", json=conversation("other text", conversation_id="bf-0"))
    assert changed.status_code == 409
    assert stack.sql("SELECT COUNT(*) FROM conversations")[0][0] == 12 + fillers["summary"]["accepted"]


def test_each_batch_item_gets_the_single_post_body_limit(make_stack):
    stack = make_stack(INBOUND_RPS=100_000, MAX_BODY_BYTES=2_000, MAX_CONTENT_CHARS=100_000)
    client = stack.start_web()
    items = [conversation("small"), conversation("x" * 5_000), conversation("small too")]
    assert client.post("/api/v1/conversations", json=items[1]).status_code == 413
    results = client.post(BATCH, json={"conversations": items}).json()["results"]
    assert [r["status"] for r in results] == ["accepted", "invalid", "accepted"]
    assert results[1]["errors"][0]["path"] == "(item)" and "2000 allowed" in results[1]["errors"][0]["message"]
