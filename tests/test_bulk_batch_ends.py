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


def test_a_step_that_keeps_failing_for_no_known_reason_ends_its_batch_instead_of_trying_for_ever(db, monkeypatch):
    """A step raises what no outcome explains (a bug in the client, here): the batch says so and is looked at
    again after a wait that doubles; after ``MAX_RETRIES`` such steps in a row it is given up and ended, its
    conversations back to wait with an attempt spent (so a fault that repeats ends them ``failed``). Before,
    the step was tried again every lease for ever, the conversations ``processing`` and nothing said."""
    from actors import bulk
    from actors.broker import settings
    from store.models import ProviderBatch

    class FaultyClient:
        def create(self, name: str) -> str:
            raise RuntimeError("a bug in the client")

    monkeypatch.setattr(bulk, "batch_api", FaultyClient)
    now, steps = queries.utcnow(), settings().max_retries
    queries.insert_conversations(
        [queries.NewConversation(f"c{n}", "{}", f"h{n}", now, now, lane=BULK_LANE) for n in range(4)]
    )
    rules = batch_store.Forming(max_conversations=4, per_request=2, flush_seconds=0, max_attempts=steps, poll_seconds=1)
    formed = batch_store.form(rules)
    said = "the worker failed: RuntimeError('a bug in the client')"

    for step in range(1, steps + 1):
        ProviderBatch.update(next_look_at=queries.utcnow()).where(ProviderBatch.id == formed.id).execute()
        bulk.work_on(batch_store.take(formed.id, 60))
        batch = ProviderBatch.get_by_id(formed.id)
        assert (batch.failed_steps, batch.last_error) == (step, said)
        if step < steps:
            wait = (batch.next_look_at - queries.utcnow()).total_seconds()
            expected = min(settings().bulk_poll_seconds * 2 ** (step - 1), settings().bulk_poll_max_seconds)
            assert expected - 5 < wait <= expected, "looked at again after a wait that doubles"
            assert batch.state != "ended"

    assert (batch.state, batch.end_reason) == ("ended", f"given up after {steps} failed steps: {said}")
    conversations = list(Conversation.select().order_by(Conversation.id))
    assert {(c.status, c.attempts, c.provider_batch) for c in conversations} == {("queued", 1, formed.id)}
    assert all(f"given up after {steps} failed steps" in c.last_error for c in conversations)
