"""The store on SQLite and PostgreSQL: migrations, idempotent inserts, forward-only status moves."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from peewee import PostgresqlDatabase, SqliteDatabase
from support.rows import SETTINGS, add, new, result

from insights.schemas import AnalysisResult, InsightRow
from store import claims, insight_writes, queries, results, rollup_check, workers
from store.migrations import migrate
from store.models import (
    BULK,
    REALTIME,
    Conversation,
    Insight,
    InsightHistory,
    InsightUsage,
    WorkerLease,
)


def test_migrations_run_once_and_keep_data(db):
    add("kept")
    assert migrate(db) == []
    assert Conversation.get_by_id("kept").status == "queued"


def test_insert_is_idempotent_and_detects_conflicts(db):
    add("c1")
    outcomes = queries.insert_conversations([new("c2"), new("c1"), new("c1", "other"), new("c2"), new("c3")])
    Outcome = queries.InsertOutcome
    assert outcomes == [Outcome.CREATED, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.DUPLICATE, Outcome.CREATED]
    assert Conversation.select().count() == 3


def test_results_complete_conversations_once(db):
    for conversation_id in ("a", "b"):
        add(conversation_id)
    claim = claims.claim_for_processing(["a", "b", "unknown"], max_attempts=3)
    assert [c.id for c in claim.conversations] == ["a", "b"]
    outcome = results.record_results(result(claim, ["a", "b"]), max_retries=3, settings=SETTINGS)
    assert sorted(outcome.completed) == ["a", "b"]
    insight = Insight.get_by_id("a")
    assert (
        insight.clusters == '["billing-issue"]'
        and insight.reasoning == "ok"
        and insight.raw_response == '{"raw": true}'
    )

    # The same result again (a redelivered message) changes nothing and adds no insight.
    again = results.record_results(result(claim, ["a", "b"]), max_retries=3, settings=SETTINGS)
    assert (again.completed, again.ignored) == ([], ["a", "b"]) and Insight.select().count() == 2
    # Completed conversations cannot be claimed again: status only moves forward.
    assert claims.claim_for_processing(["a"], max_attempts=3).conversations == []
    assert Conversation.get_by_id("a").status == "completed"


def test_missing_rows_are_retried_then_failed_with_the_reason(db):
    add("m")
    for attempt in (1, 2):
        claim = claims.claim_for_processing(["m"], max_attempts=2)
        outcome = results.record_results(result(claim, [], {"m": "no row"}), max_retries=2, settings=SETTINGS)
        row = Conversation.get_by_id("m")
        assert row.attempts == attempt
        if attempt == 1:
            assert outcome.retry == ["m"] and row.status == "queued" and row.last_error == "no row"
        else:
            assert outcome.failed == ["m"] and row.status == "failed" and row.last_error == "no row"
    assert Insight.select().count() == 0


def test_stale_open_conversations_are_reclaimed_once(db):
    add("old")
    add("done")
    claim = claims.claim_for_processing(["done"], max_attempts=3)
    results.record_results(result(claim, ["done"]), max_retries=3, settings=SETTINGS)
    later = queries.utcnow()
    assert claims.reclaim_stale(later, later) == ["old"]
    assert claims.reclaim_stale(later, later) == [], "a reclaimed conversation is touched, so nobody else takes it"


def test_a_live_workers_claims_stay_its_own_and_a_dead_ones_come_back_once(db):
    """``processing`` is left alone while its worker's lease holds, until the claim is older than any call
    could last (its finish failed, and so did giving it back); once the lease lapses the conversations go
    back to ``queued`` (attempt kept), once, and can be claimed again."""
    for conversation_id in ("live", "dead", "legacy"):
        add(conversation_id)
    workers.renew("worker-alive", 60)
    workers.renew("worker-killed", 60)
    live = claims.claim_for_processing(["live"], max_attempts=3, worker="worker-alive")
    claims.claim_for_processing(["dead"], max_attempts=3, worker="worker-killed")
    claims.claim_for_processing(["legacy"], max_attempts=3)  # claimed by a release before leases
    long_ago = queries.utcnow()
    assert workers.reclaim_lapsed() == [], "every lease holds"
    assert claims.reclaim_stale(long_ago - timedelta(hours=1), long_ago - timedelta(hours=1)) == [], "nothing is old"
    assert claims.claim_for_processing(["live", "dead"], max_attempts=3).conversations == [], "in a call already"

    WorkerLease.update(expires_at=long_ago).where(WorkerLease.worker == "worker-killed").execute()
    assert workers.reclaim_lapsed() == [["dead"]]
    assert workers.reclaim_lapsed() == [], "back to queued: nobody else takes it"
    assert claims.reclaim_stale(long_ago - timedelta(hours=1), long_ago - timedelta(hours=1)) == [], "touched"
    now = queries.utcnow() + timedelta(seconds=1)
    assert sorted(claims.reclaim_stale(now, long_ago - timedelta(hours=1))) == ["dead", "legacy"], "a live claim holds"
    row = Conversation.get_by_id("dead")
    assert (row.status, row.attempts) == ("queued", 1)
    assert (
        Conversation.get_by_id("live").claim_token == live.token
        and Conversation.get_by_id("live").status == "processing"
    )
    again = claims.claim_for_processing(["dead"], max_attempts=3, worker="worker-alive")
    assert [c.id for c in again.conversations] == ["dead"] and Conversation.get_by_id("dead").attempts == 2
    assert claims.reclaim_stale(long_ago, long_ago) == ["live"], "until it is older than any call could last"


def taken_back(conversation_ids: list[str]) -> None:
    """The conversations' worker died: its lease lapses, and the reconciler's query takes them back."""
    Conversation.update(claimed_by="a-dead-worker").where(Conversation.id.in_(conversation_ids)).execute()
    assert sorted(sum(workers.reclaim_lapsed(), [])) == sorted(conversation_ids)


def test_a_spent_conversation_fails_alone_and_its_neighbours_are_claimed(db):
    """The failed one keeps its last error, with the reason appended as text (not added as a number)."""
    for conversation_id in ("first", "spent", "quiet", "last"):
        add(conversation_id)
    Conversation.update(attempts=3, last_error="Grok error 503").where(Conversation.id == "spent").execute()
    Conversation.update(attempts=3).where(Conversation.id == "quiet").execute()

    claim = claims.claim_for_processing(["first", "spent", "quiet", "last"], max_attempts=3)

    assert sorted(c.id for c in claim.conversations) == ["first", "last"]
    rows = {c.id: c for c in Conversation.select()}
    assert (rows["spent"].status, rows["spent"].last_error) == ("failed", "Grok error 503 (gave up after 3 attempts)")
    assert (rows["quiet"].status, rows["quiet"].last_error) == ("failed", "(gave up after 3 attempts)")
    assert {(rows[i].status, rows[i].attempts) for i in ("first", "last")} == {("processing", 1)}


def through_the_pipeline(result: AnalysisResult) -> AnalysisResult:
    """``result`` as ``store_results`` receives it from ``analyze_batch``: JSON in a Dramatiq message."""
    return AnalysisResult.model_validate(json.loads(json.dumps(result.model_dump(mode="json"))))


def test_text_no_database_stores_is_cleaned_and_every_row_stored(db):
    """A NUL (PostgreSQL refuses it) and a lone surrogate (UTF-8 cannot encode it; ``json.loads`` accepts
    ``"\\ud800"``) in Grok's rows and usage: cleaned, so the rows are stored, neighbours with them."""
    ids = ["nul", "surrogate", "plain"]
    for conversation_id in ids:
        add(conversation_id)
    claim = claims.claim_for_processing(ids, max_attempts=3)
    rows = [
        {"conversation_id": "nul", "reasoning": "before \u0000 after", "clusters": ["bill\u0000ing", "refund"]},
        {"conversation_id": "surrogate", "reasoning": "before \ud800 after\u0007", "clusters": ["\ud800", "shipping"]},
        {"conversation_id": "plain", "reasoning": "fine", "clusters": ["billing"]},
    ]
    answer = json.dumps({"results": [{**row, "sentiment_score": 0.2, "confidence": 0.9} for row in rows]})
    usage = json.loads('{"prompt_tokens": 7, "note\\ud800": "x\\u0000y"}')
    analysis = AnalysisResult.validated(
        ids,
        json.loads(answer)["results"],
        model="m",
        prompt_version="p",
        raw_response=answer,
        usage=usage,
        claim_token=claim.token,
    )

    outcome = results.record_results(through_the_pipeline(analysis), max_retries=3, settings=SETTINGS)

    assert sorted(outcome.completed) == sorted(ids)
    stored = {i.conversation_id: i for i in Insight.select()}
    assert (stored["nul"].reasoning, json.loads(stored["nul"].clusters)) == ("before  after", ["billing", "refund"])
    assert (stored["surrogate"].reasoning, json.loads(stored["surrogate"].clusters)) == (
        "before \ufffd after",
        ["shipping"],
    )
    assert stored["plain"].raw_response == answer, "the raw response is kept verbatim: its escapes stay escapes"
    assert json.loads(stored["plain"].usage) == {"prompt_tokens": 7, "note\ufffd": "xy"}


def test_an_insight_the_database_refuses_is_rolled_back_alone(db):
    """One row breaks a NOT NULL constraint, another holds text UTF-8 cannot encode: each is rolled back to
    its savepoint, daily counts included, and retried (or failed, on its last attempt); its neighbours
    complete. Validation lets no such row through (``model_construct`` skips it): the savepoints are for
    whatever it misses."""
    ids = ["before", "redone", "broken", "after"]
    for conversation_id in ids:
        add(conversation_id)
    first = claims.claim_for_processing(["redone"], max_attempts=3)
    results.record_results(result(first, ["redone"]), max_retries=3, settings=SETTINGS)
    queries.reopen(["redone"])  # reprocessed: its insight must survive the refused replacement
    claim = claims.claim_for_processing(ids, max_attempts=3)
    Conversation.update(attempts=3).where(Conversation.id == "broken").execute()  # its last attempt
    refused = [
        InsightRow.model_construct(
            conversation_id=i, sentiment_score=-0.9, clusters=["refunds"], confidence=0.1, reasoning=text
        )
        for i, text in (("redone", None), ("broken", "lone \ud800"))
    ]
    good = result(claim, ["before", "after"])

    outcome = results.record_results(
        good.model_copy(update={"rows": [*good.rows, *refused]}), max_retries=3, settings=SETTINGS
    )

    assert (sorted(outcome.completed), outcome.retry, outcome.failed) == (["after", "before"], ["redone"], ["broken"])
    rows = {c.id: c for c in Conversation.select()}
    assert rows["redone"].status == "queued" and "refused this insight (IntegrityError" in rows["redone"].last_error
    assert rows["broken"].status == "failed" and "refused this insight" in rows["broken"].last_error
    assert {i.conversation_id: i.reasoning for i in Insight.select()} == {"before": "ok", "redone": "ok", "after": "ok"}
    assert InsightHistory.select().count() == 0
    assert rollup_check.drift() == {} and sum(rollup_check.stored_totals().cells.values()) == 3


def test_a_result_of_an_earlier_claim_cannot_undo_a_reprocess(db):
    """An old ``store_results`` message redelivered after ``insights reprocess`` is ignored: the
    conversation waits for its new analysis, which alone replaces the insight (one history row)."""
    add("x")
    first = claims.claim_for_processing(["x"], max_attempts=3)
    results.record_results(result(first, ["x"]), max_retries=3, settings=SETTINGS)
    analyzed_at = Insight.get_by_id("x").analyzed_at
    queries.reopen(["x"])

    stale = results.record_results(result(first, ["x"]), max_retries=3, settings=SETTINGS)

    assert (stale.completed, stale.ignored) == ([], ["x"])
    assert (Conversation.get_by_id("x").status, Insight.get_by_id("x").analyzed_at) == ("queued", analyzed_at)
    assert InsightHistory.select().count() == 0
    second = claims.claim_for_processing(["x"], max_attempts=3)
    assert results.record_results(result(first, ["x"]), max_retries=3, settings=SETTINGS).ignored == ["x"]
    assert results.record_results(result(second, ["x"]), max_retries=3, settings=SETTINGS).completed == ["x"]
    assert Insight.get_by_id("x").analyzed_at > analyzed_at and InsightHistory.select().count() == 1


def test_a_second_claim_makes_the_first_claims_result_ignored(db):
    """A conversation claimed again (the reconciler re-sent it, its first batch was slow) is settled by
    the latest claim's result only, whichever comes first; a missing row of a stale result retries nothing."""
    for conversation_id in ("y", "z"):
        add(conversation_id)
    first = claims.claim_for_processing(["y", "z"], max_attempts=3)
    taken_back(["y"])
    second = claims.claim_for_processing(["y"], max_attempts=3)

    stale = results.record_results(result(first, ["z"], {"y": "no row"}), max_retries=3, settings=SETTINGS)

    assert (stale.completed, stale.retry, stale.ignored) == (["z"], [], ["y"])
    y = Conversation.get_by_id("y")
    assert (y.status, y.attempts, y.last_error) == ("processing", 2, None)
    assert not Insight.select().where(Insight.conversation == "y").exists()
    assert results.record_results(result(second, ["y"]), max_retries=3, settings=SETTINGS).completed == ["y"]
    assert Conversation.get_by_id("y").status == "completed"


def test_migration_0005_adds_the_claim_token_to_a_database_with_data(db):
    """On a database of the release before: a conversation it had claimed is settled by its result, which
    has no token (a message in flight across the upgrade); new claims get tokens."""
    add("claimed-before")
    add("queued-before")
    db.execute_sql("ALTER TABLE conversations DROP COLUMN claim_token")  # the table as 0001 to 0004 left it
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0005_claim_token'")
    Conversation.update(status="processing", attempts=1).where(Conversation.id == "claimed-before").execute()

    assert migrate(db) == ["0005_claim_token"]

    row = InsightRow(conversation_id="claimed-before", sentiment_score=0.1, clusters=[], confidence=0.5, reasoning="r")
    in_flight = AnalysisResult(
        conversation_ids=["claimed-before"], rows=[row], model="m", prompt_version="p", raw_response="{}"
    )
    assert results.record_results(in_flight, max_retries=3, settings=SETTINGS).completed == ["claimed-before"]
    claim = claims.claim_for_processing(["queued-before"], max_attempts=3)
    assert Conversation.get_by_id("queued-before").claim_token == claim.token
    assert results.record_results(result(claim, ["queued-before"]), max_retries=3, settings=SETTINGS).completed == [
        "queued-before"
    ]


def test_a_batch_failing_late_leaves_a_conversation_claimed_since_alone(db):
    """A first claim's batch fails after the conversation was claimed again (the reconciler re-sent it):
    its refund, requeue, note and failure, made under its own token, change nothing of the second claim."""
    add("reclaimed")
    first = claims.claim_for_processing(["reclaimed"], max_attempts=5)
    taken_back(["reclaimed"])
    second = claims.claim_for_processing(["reclaimed"], max_attempts=5)
    assert claims.refund_attempt(["reclaimed"], requeue=True, claim_token=first.token) == 0
    assert claims.note_error(["reclaimed"], "late", claim_token=first.token) == 0
    assert claims.fail_open(["reclaimed"], "late", claim_token=first.token) == 0
    row = Conversation.get_by_id("reclaimed")
    assert (row.status, row.attempts, row.last_error, row.claim_token) == ("processing", 2, None, second.token)
    assert claims.refund_attempt(["reclaimed"], requeue=True, claim_token=second.token) == 1
    assert (Conversation.get_by_id("reclaimed").status, Conversation.get_by_id("reclaimed").attempts) == ("queued", 1)


def test_a_batchs_reads_and_writes_look_its_ids_up_by_key(db, caplog):
    """Every statement of a batch's way (read, claim, refund, note, store) that names its ids is served by
    the primary key: an index on status or lane would scan every waiting conversation of a backlog."""
    if not isinstance(db, SqliteDatabase):
        pytest.skip("the plan checked is SQLite's (PostgreSQL's planner has statistics)")
    ids = [f"k{n}" for n in range(5)]
    for conversation_id in [*ids, *(f"backlog-{n}" for n in range(50))]:
        add(conversation_id)
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        queries.waiting_payloads(ids)
        claim = claims.claim_for_processing(ids, max_attempts=3, worker="w")
        claims.note_error(ids[:1], "noted", claim.token)
        claims.refund_attempt(ids[:1], requeue=True, claim_token=claim.token)
        results.record_results(result(claim, ids[1:3], {ids[3]: "no row"}), max_retries=3, settings=SETTINGS)
    statements = [record.msg for record in caplog.records if record.name == "peewee" and isinstance(record.msg, tuple)]
    by_ids = [
        (sql, params) for sql, params in statements if "conversations" in sql and all(i in params for i in ids[1:3])
    ]
    assert by_ids, "the batch's statements were seen"
    for sql, params in by_ids:
        plan = " ".join(row[3] for row in db.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        assert "conversation_" not in plan.replace("sqlite_autoindex_conversations_1", ""), (sql, plan)


def usage_drift() -> dict[tuple, tuple]:
    """``insight_usage`` rows that differ from sums over the insights: ``{(day, lane): (stored, summed)}``."""
    summed: dict[tuple, list[float]] = {}
    for insight in Insight.select():
        row = summed.setdefault((insight.occurred_at.date(), insight.lane), [0.0] * 6)
        for index, value in enumerate(
            (
                1,
                insight.cost_usd is not None,
                insight.prompt_tokens,
                insight.cached_tokens,
                insight.completion_tokens,
                insight.cost_usd,
            )
        ):
            row[index] += value or 0
    stored = {(day, lane): values for day, lane, *values in InsightUsage.select().tuples()}
    return {
        key: (stored.get(key), summed.get(key))
        for key in stored.keys() | summed.keys()
        if stored.get(key, [0] * 6) != pytest.approx(summed.get(key, [0] * 6), abs=1e-9)
    }


def test_a_batch_with_values_the_database_refuses_stores_the_rest_and_sends_those_back(db):
    """A NUL (PostgreSQL refuses it, SQLite stores it) and a lone surrogate (neither can encode it) among
    good rows, one of them replacing an earlier insight: the batch's single upsert is refused, so each row
    is written in a savepoint of its own; only the refused ones go back, with the reason, their earlier
    insight kept, no history for them, and every rollup exact."""
    on_postgres = isinstance(db, PostgresqlDatabase)
    ids = ["good", "nul", "replaced", "surrogate"]
    for conversation_id in ids:
        add(conversation_id)
    first = claims.claim_for_processing(["nul", "replaced"], max_attempts=3)
    results.record_results(result(first, ["nul", "replaced"]), max_retries=3, settings=SETTINGS)
    queries.reopen(["nul", "replaced"])
    claim = claims.claim_for_processing(ids, max_attempts=3)
    hostile = [
        InsightRow.model_construct(
            conversation_id=i,
            sentiment_score=-0.9,
            clusters=["refunds"],
            confidence=0.1,
            reasoning=text,
            suggested_cluster=None,
        )
        for i, text in (("nul", "NUL \x00 here"), ("surrogate", "lone \ud800"))
    ]
    good = result(claim, ["good", "replaced"])

    outcome = results.record_results(
        good.model_copy(update={"rows": [*good.rows, *hostile]}), max_retries=3, settings=SETTINGS
    )

    refused = ["nul", "surrogate"] if on_postgres else ["surrogate"]
    assert (sorted(outcome.completed), sorted(outcome.retry), outcome.failed) == (
        sorted(set(ids) - set(refused)),
        refused,
        [],
    )
    rows = {c.id: c for c in Conversation.select()}
    assert all(
        rows[i].status == "queued" and "the database refused this insight" in rows[i].last_error for i in refused
    )
    if on_postgres:
        assert "(ValueError: A string literal cannot contain NUL" in rows["nul"].last_error
    assert all((rows[i].status, rows[i].last_error) == ("completed", None) for i in outcome.completed)
    stored = {i.conversation_id: i.reasoning for i in Insight.select()}
    assert stored == {"good": "ok", "replaced": "ok", "nul": "ok" if on_postgres else "NUL \x00 here"}
    history = sorted(h.conversation_id for h in InsightHistory.select())
    assert history == (["replaced"] if on_postgres else ["nul", "replaced"])
    assert rollup_check.drift() == {} and usage_drift() == {}
    assert sum(rollup_check.stored_totals().cells.values()) == 3


def test_replaced_insights_go_to_history_whole_and_the_rollups_stay_exact(db, monkeypatch):
    """A batch replacing earlier insights (some moved to the bulk lane, one left without a row), written
    two rows a statement to cover the chunks: each earlier insight is kept in history as it was, the new
    ones hold the new analysis and its share of the tokens, and every rollup moves exactly."""
    monkeypatch.setattr(insight_writes, "ROWS_PER_STATEMENT", 2)
    ids = ["a", "b", "c", "d", "e"]
    for conversation_id in ids:
        add(conversation_id)
    first = claims.claim_for_processing(ids, max_attempts=3)
    results.record_results(
        result(first, ids).model_copy(update={"usage": {"prompt_tokens": 500, "completion_tokens": 50}}),
        max_retries=3,
        settings=SETTINGS,
    )
    earlier = {i.conversation_id: i.__data__ for i in Insight.select()}
    queries.reopen(["b", "c"], BULK)
    queries.reopen(["d", "e"])
    second = claims.claim_for_processing(["b", "c", "d", "e"], max_attempts=3)
    rows = [
        InsightRow(
            conversation_id=i,
            sentiment_score=-0.7,
            clusters=["refunds", "late-delivery"],
            confidence=0.3,
            reasoning="again",
        )
        for i in ("b", "c", "d")
    ]
    again = AnalysisResult(
        conversation_ids=["b", "c", "d", "e"],
        rows=rows,
        rejected={"e": "no row"},
        model="grok-4.3",
        prompt_version="p2",
        raw_response="{}",
        usage={"prompt_tokens": 4000, "completion_tokens": 400},
        claim_token=second.token,
    )

    outcome = results.record_results(again, max_retries=3, settings=SETTINGS)

    assert (sorted(outcome.completed), outcome.retry, outcome.failed, outcome.ignored) == (
        ["b", "c", "d"],
        ["e"],
        [],
        [],
    )
    insights = {i.conversation_id: i for i in Insight.select()}
    assert {i: (insights[i].reasoning, insights[i].prompt_version) for i in ids} == {
        "a": ("ok", "p1"),
        "b": ("again", "p2"),
        "c": ("again", "p2"),
        "d": ("again", "p2"),
        "e": ("ok", "p1"),
    }
    assert (insights["b"].lane, insights["d"].lane, insights["b"].prompt_tokens, insights["b"].completion_tokens) == (
        BULK,
        REALTIME,
        1000,
        100,
    )
    assert insights["b"].cost_usd == pytest.approx(insights["d"].cost_usd * 0.8), "the Batch API's rates: 20 % off"
    history = {h.conversation_id: h.__data__ for h in InsightHistory.select()}
    assert sorted(history) == ["b", "c", "d"]
    for conversation_id, kept in history.items():
        assert kept["superseded_at"] == insights[conversation_id].analyzed_at
        assert {k: v for k, v in kept.items() if k not in ("id", "superseded_at")} == earlier[conversation_id]
    assert rollup_check.drift() == {} and usage_drift() == {}
    assert sum(rollup_check.stored_totals().cells.values()) == 5
