"""A provider batch that ends as a whole, on real processes against the emulator's Batch API: its unanswered
conversations come back in ``BATCH_SIZE`` requests, not one request each (the isolation is for a request
that failed on its own), and an operator's cancel spends no attempt and says so."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support import wait_until
from support.cli import insights
from support.traffic import BULK, post_bulk, provider_batches

from store import provider_batches as batch_store
from store import queries
from store.migrations import migrate
from store.models import BULK as BULK_LANE
from store.models import Conversation

CONVERSATIONS, PER_REQUEST = 40, 5  # 8 requests a batch; 40 once each is sent alone


def ended_with(stack, words: str) -> Callable[[], bool]:
    return lambda: any(row[1] and words in row[1] for row in provider_batches(stack))


def submitted(stack) -> Callable[[], bool]:
    return lambda: stack.sql("SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'")[0][0] > 0


def expire(grok, stack) -> None:
    grok.configure(batch_delay=60, batch_expiry=1)
    wait_until(ended_with(stack, "expired at xAI"), timeout=30, message="the batch to expire")
    grok.configure(batch_delay=0.2, batch_expiry=0)


def fail(grok, stack) -> None:
    grok.configure(batch_delay=600, batch_error="internal error")
    wait_until(ended_with(stack, "failed at xAI"), timeout=30, message="the batch to fail at xAI")
    grok.configure(batch_delay=0.2, batch_error="")


def forget(grok, stack) -> None:
    grok.configure(batch_delay=600)
    wait_until(submitted(stack), timeout=30, message="a provider batch submitted")
    grok.control.post("/reset").raise_for_status()  # xAI answers 404 for it from now on
    grok.configure(batch_delay=0.2)
    wait_until(ended_with(stack, "unknown to xAI"), timeout=30, message="the batch xAI forgot to end")


def give_up(grok, stack) -> None:
    grok.configure(batch_delay=600)
    wait_until(ended_with(stack, "BULK_GIVE_UP_SECONDS"), timeout=30, message="the batch given up")
    grok.configure(batch_delay=0.2)


@pytest.mark.parametrize("end", [expire, fail, forget, give_up], ids=lambda end: end.__name__)
def test_a_batch_that_ends_as_a_whole_comes_back_in_full_requests(make_stack, grok, end):
    """Expired, failed at xAI, unknown to xAI (404) or given up: no request failed on its own, so the
    conversations come back ``BATCH_SIZE`` to a request (8 requests), not each alone (40)."""
    give_up_seconds = {"BULK_GIVE_UP_SECONDS": 1} if end is give_up else {}
    stack = make_stack(**{**BULK, "BATCH_SIZE": PER_REQUEST}, MAX_RETRIES=6, **give_up_seconds, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    grok.configure(batch_delay=600)
    ids = post_bulk(client, [f"My parcel {n} is lost" for n in range(CONVERSATIONS)])
    end(grok, stack)

    documents = stack.settled(client, ids, timeout=90)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
    assert min(d["attempts"] for d in documents) >= 2, "the whole-batch end spent an attempt"
    batches = grok.control.get("/batches").json()["batches"]
    assert len(batches) >= (1 if end is forget else 2)
    assert [b["state"]["num_requests"] for b in batches] == [CONVERSATIONS // PER_REQUEST] * len(batches), (
        "every batch, the one that ended and those after, holds BATCH_SIZE conversations a request"
    )


def test_an_operators_cancel_spends_no_attempt_and_says_so(make_stack, grok, database_env):
    """Cancelled by a person, a batch's unanswered conversations go back without spending an attempt: on
    their only attempt (``MAX_RETRIES=1``) they still complete, in full requests; the command says so."""
    grok.configure(batch_delay=600)
    stack = make_stack(**{**BULK, "BATCH_SIZE": PER_REQUEST}, MAX_RETRIES=1, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Cancel my plan {n}" for n in range(CONVERSATIONS)])
    wait_until(submitted(stack), timeout=30, message="a provider batch submitted")
    [(batch_id,)] = stack.sql("SELECT id FROM provider_batches")

    cancelled = insights(stack, "bulk", "cancel", batch_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"{CONVERSATIONS} conversation(s)" in cancelled.stdout and "no attempt spent" in cancelled.stdout
    wait_until(ended_with(stack, "cancelled by an operator"), timeout=30, message="the batch cancelled and ended")
    grok.configure(batch_delay=0.2)

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    batches = grok.control.get("/batches").json()["batches"]
    assert [b["state"]["num_requests"] for b in batches] == [CONVERSATIONS // PER_REQUEST] * 2
    assert batches[0]["state"]["num_cancelled"] == CONVERSATIONS // PER_REQUEST


def test_only_conversations_whose_own_request_failed_are_sent_alone_even_after_the_upgrade(db):
    """Migration 0014 adds ``isolated`` to a database with data, every conversation not isolated; a new
    batch sends the isolated ones alone and the others ``BATCH_SIZE`` to a request, whatever their
    attempts; a fresh analysis (``insights reprocess``) clears it."""
    db.execute_sql("ALTER TABLE conversations DROP COLUMN isolated")  # the table as 0001 to 0013 left it
    db.execute_sql("DELETE FROM schema_migrations WHERE name = '0014_isolated'")
    now = queries.utcnow()
    queries.insert_conversations(
        [queries.NewConversation(f"c{n}", "{}", f"h{n}", now, now, lane=BULK_LANE) for n in range(9)]
    )
    assert migrate(db) == ["0014_isolated"]
    Conversation.update(attempts=1).where(Conversation.id.in_(["c0", "c1", "c2"])).execute()  # a batch ended as a whole
    batch_store.isolate(["c1", "c7"])  # their own requests failed

    rules = batch_store.Forming(max_conversations=9, per_request=5, flush_seconds=0, max_attempts=3, poll_seconds=1)
    batch = batch_store.form(rules)
    groups = sorted(json.loads(r.conversation_ids) for r in batch_store.requests_of(batch.id))
    assert groups == [["c0", "c2", "c3", "c4", "c5"], ["c1"], ["c6", "c8"], ["c7"]]
    Conversation.update(status="completed").execute()
    queries.reopen(["c1", "c7"], lane=BULK_LANE)
    assert not Conversation.select().where(Conversation.isolated).exists()
