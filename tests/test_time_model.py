"""The conversation's own time: history lands on the days it happened, windows, counts, summary, export and
reprocess follow ``occurred_at``, a migration fills it for rows accepted before it existed, and waiting is
measured from the last enqueue, not from arrival."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from support.cli import insights, write_lines
from support.traffic import conversation

from insights.incoming import request_models
from insights.schemas import AnalysisResult, InsightRow
from settings import get_settings, load_settings
from store import claims, counts, queries, reports, results
from store.migrations import migrate
from store.models import Conversation, Insight

SETTINGS = load_settings({})  # how a worker prices tokens and redacts reasons

NOVEMBER = datetime(2026, 11, 1)


def said_on(day: int, text: str, hour: int = 9) -> dict:
    """A conversation whose two messages were exchanged on ``day`` November 2026."""
    at = NOVEMBER.replace(day=day, hour=hour)
    return {
        "messages": [
            {"role": "customer", "content": text, "timestamp": at.isoformat() + "Z"},
            {
                "role": "agent",
                "content": "Sorry about that.",
                "timestamp": (at + timedelta(hours=30)).isoformat() + "+00:00",
            },
        ]
    }


def window(start: datetime, end: datetime) -> dict[str, str]:
    return {"start_time": start.isoformat() + "Z", "end_time": end.isoformat() + "Z"}


def test_history_lands_on_its_own_days_everywhere(make_stack, tmp_path, database_env):
    stack = make_stack(BATCH_FLUSH_SECONDS=0.3, **database_env)
    client = stack.start_web()
    history = tmp_path / "november.jsonl"
    write_lines(
        history,
        [
            {"conversation_id": f"nov-{day}", **said_on(day, f"Parcel {day} arrived broken, awful.")}
            for day in range(1, 26)
        ],
    )
    assert insights(stack, "import", str(history), "--no-progress").returncode == 0
    given = client.post(
        "/api/v1/conversations",
        json={
            **said_on(20, "Fine, thanks."),
            "occurred_at": "2026-11-03T12:00:00-05:00",
            "conversation_id": "own-time",
        },
    )
    ahead = client.post(
        "/api/v1/conversations",
        json={
            **conversation("From the future"),
            "occurred_at": "2999-01-01T00:00:00Z",
            "conversation_id": "clock-ahead",
        },
    )
    live = client.post(
        "/api/v1/conversations", json={**conversation("No timestamps at all"), "conversation_id": "live"}
    )
    assert {given.status_code, ahead.status_code, live.status_code} == {202}
    stack.start_worker()
    ids = [f"nov-{day}" for day in range(1, 26)] + ["own-time", "clock-ahead", "live"]
    documents = {d["conversation_id"]: d for d in stack.settled(client, ids)}

    assert documents["nov-5"]["occurred_at"] == "2026-11-05T09:00:00Z", "the first message's time"
    assert documents["nov-5"]["insight"]["occurred_at"] == "2026-11-05T09:00:00Z"
    assert documents["nov-5"]["received_at"] > "2026-11-26", "and when the service accepted it"
    assert documents["own-time"]["occurred_at"] == "2026-11-03T17:00:00Z", "the body's own occurred_at wins"
    for clamped in ("clock-ahead", "live"):
        assert documents[clamped]["occurred_at"] == documents[clamped]["received_at"], "never later than received_at"

    first_days = window(NOVEMBER, NOVEMBER + timedelta(days=9))  # 1 to 9 November: nine imported, own-time
    page = client.get("/api/v1/insights", params={**first_days, "limit": 100}).json()
    assert sorted(i["conversation_id"] for i in page["insights"]) == sorted(
        [f"nov-{d}" for d in range(1, 10)] + ["own-time"]
    )
    assert page["metadata"]["total_count"] == 10
    summary = client.get("/api/v1/insights/summary", params=first_days).json()
    assert summary["conversations_by_status"]["completed"] == 10 and sum(summary["sentiment"]["counts"].values()) == 10
    export = insights(stack, "export", "--start", "2026-11-01", "--end", "2026-11-10")
    assert export.returncode == 0 and len(export.stdout.splitlines()) == 10
    csv_export = insights(stack, "export", "--start", "2026-11-01", "--end", "2026-11-02", "--format", "csv")
    assert csv_export.stdout.splitlines()[0].startswith("conversation_id,occurred_at,received_at")
    assert insights(stack, "reprocess", "--start", "2026-11-20", "--end", "2026-11-26", "--dry-run").stdout.startswith(
        "would send 6"
    )


def canonical(body: dict) -> str:
    return request_models(get_settings()).model_validate(body).canonical_payload()


def test_a_payload_without_occurred_at_is_the_one_accepted_before_the_field_existed():
    """Its hash is unchanged, so a client resending a conversation accepted before the upgrade gets a
    duplicate, not a ``409``."""
    body = said_on(2, "Hello")
    assert "occurred_at" not in json.loads(canonical(body))
    assert canonical({**body, "occurred_at": "2026-11-02T00:00:00Z"}) != canonical(body)
    assert canonical({**body, "occurred_at": "2026-11-02T00:00:00Z"}) == canonical(
        {**body, "occurred_at": "2026-11-01T19:00:00-05:00"}
    )


def accept(conversation_id: str, body: dict, received_at: datetime) -> None:
    payload = canonical(body)
    model = request_models(get_settings()).model_validate(body)
    queries.insert_conversations(
        [queries.NewConversation.of(conversation_id, payload, received_at, model.occurred(received_at))]
    )


def complete(ids: list[str]) -> None:
    claim = claims.claim_for_processing(ids, max_attempts=5)
    rows = [
        InsightRow(conversation_id=i, sentiment_score=-0.5, clusters=["late-delivery"], confidence=0.9, reasoning="r")
        for i in ids
    ]
    result = AnalysisResult(
        conversation_ids=ids, rows=rows, model="m", prompt_version="p", raw_response="{}", claim_token=claim.token
    )
    assert results.record_results(result, max_retries=5, settings=SETTINGS).completed == ids


def test_the_migration_gives_rows_accepted_before_it_their_own_time(db):
    received = queries.utcnow() - timedelta(days=1)
    accept("old-history", said_on(4, "Broken"), received)
    accept("old-live", conversation("No timestamps"), received)
    accept("old-waiting", said_on(6, "Still waiting"), received)
    complete(["old-history", "old-live"])
    Conversation.update(occurred_at=None, enqueued_at=None).execute()  # as migration 0005 left them
    Insight.update(occurred_at=None).execute()
    for index, table, columns in (
        ("conversation_received_at_id", "conversations", "received_at, id"),
        ("insight_received_at_conversation_id", "insights", "received_at, conversation_id"),
        ("insight_confidence_received_at_sentiment_score", "insights", "confidence, received_at, sentiment_score"),
    ):
        db.execute_sql(f"CREATE INDEX {index} ON {table} ({columns})")  # named as 0005's code named them
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0006_occurred_at'")

    assert migrate(db) == ["0006_occurred_at"]
    indexes = [i.name for table in ("conversations", "insights") for i in db.get_indexes(table)]
    assert not [name for name in indexes if "received_at" in name], "windows no longer pay for the old indexes"
    assert "insight_occurred_at_conversation_id" in indexes

    times = {c.id: (c.occurred_at, c.enqueued_at) for c in Conversation.select()}
    assert times["old-history"][0] == NOVEMBER.replace(day=4, hour=9)
    assert times["old-live"][0] == received
    assert {i.conversation_id: i.occurred_at for i in Insight.select()} == {
        "old-history": times["old-history"][0],
        "old-live": received,
    }
    assert times["old-history"][1] == received and times["old-waiting"][1] is not None
    assert counts.count(NOVEMBER, NOVEMBER + timedelta(days=5), counts.Filters()) == 1, "the daily counts follow"


def test_waiting_counts_from_the_last_enqueue_not_from_arrival(db):
    """Reprocessing a window of old conversations starts a new wait: ``insights stats`` (and the metric,
    which reads the same figure) and the summary do not read days of waiting."""
    long_ago = queries.utcnow() - timedelta(days=3)
    accept("settled-long-ago", said_on(2, "Broken"), long_ago)
    complete(["settled-long-ago"])
    accept("waiting-since-then", said_on(3, "Hello?"), long_ago)
    assert reports.seconds_since(reports.stats().oldest_waiting) > 3 * 86_400 - 60, "a real wait still shows"
    queries.reopen(["settled-long-ago"])
    queries.requeue(["waiting-since-then"])

    waited = reports.seconds_since(reports.stats().oldest_waiting)
    assert 0 <= waited < 60
    summary = reports.summarize(NOVEMBER, NOVEMBER + timedelta(days=30), (-0.1, 0.1), 5)
    assert summary.oldest_waiting == reports.stats().oldest_waiting, "stats, metric and summary agree"
