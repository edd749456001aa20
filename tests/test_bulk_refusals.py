"""The bulk lane and what xAI refuses, on real processes against the emulator: it honours every hold of the
real-time lane and starts the same hold on a refused key; a batch xAI refuses outright costs no attempt; a
request's error reads the same whatever its shape."""

from __future__ import annotations

from datetime import datetime

import pytest
from support import wait_until
from support.grok import GROK_KEY
from support.traffic import BULK, post_all, post_bulk, provider_batches, worker_log

WRONG_KEY = "the-right-key-is-another"
SET_ASIDE = "Grok cannot take a batch now"  # the real-time lane's line for a batch it sets aside


def grok_check(client) -> dict:
    return client.get("/readyz").json()["grok"]


def test_a_key_refused_in_the_real_time_lane_holds_the_bulk_lane(make_stack, grok):
    """While the real-time lane's refusal holds every worker, the bulk lane forms nothing and calls nothing;
    once the key is right and the hold over, everything completes on its first attempt."""
    grok.configure(api_key=WRONG_KEY)
    stack = make_stack(**BULK, GROK_AUTH_PAUSE_SECONDS=20, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    live = post_all(client, ["Where is my order?"])
    wait_until(lambda: grok_check(client)["state"] == "misconfigured", timeout=20, message="the real-time lane's 401")
    set_aside = worker_log(stack).count(SET_ASIDE)
    ids = post_bulk(client, [f"My invoice {n} is wrong" for n in range(6)])

    wait_until(
        lambda: worker_log(stack).count(SET_ASIDE) >= set_aside + 2,
        timeout=30,
        message="the real-time batch set aside twice more, the bulk lane ticking all along",
    )
    overview = grok.control.get("/batches").json()
    assert (overview["batches"], overview["unauthorized"]) == ([], 0), "the bulk lane called nothing"
    assert {(d["status"], d["attempts"]) for d in stack.conversations(client, ids)} == {("queued", 0)}
    assert "bulk lane held" in worker_log(stack)

    grok.configure(api_key=GROK_KEY)
    documents = stack.settled(client, ids + live, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()


def test_a_key_refused_by_the_batch_api_holds_both_lanes(make_stack, grok):
    """The bulk lane's 401 starts the real-time lane's hold (``GROK_AUTH_PAUSE_SECONDS``, named in
    ``/readyz``): one refused call, not one every poll, and no real-time call while it lasts."""
    grok.configure(api_key=WRONG_KEY)
    stack = make_stack(**BULK, GROK_AUTH_PAUSE_SECONDS=20, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Cancel my plan {n}" for n in range(6)])

    check = wait_until(
        lambda: (c := grok_check(client))["state"] == "misconfigured" and c,
        timeout=20,
        message="/readyz to name the Batch API's refusal",
    )
    assert "Batch API" in check["reason"] and "401" in check["reason"] and check["seconds_left"] > 0
    live = post_all(client, ["Where is my order?"])
    wait_until(
        lambda: worker_log(stack).count(SET_ASIDE) >= 2, timeout=30, message="the real-time batch set aside twice"
    )
    assert grok.log() == [], "the real-time lane honours the hold the bulk lane started"
    assert grok.control.get("/batches").json()["unauthorized"] == 1, "one refused call, not one every poll"

    grok.configure(api_key=GROK_KEY)
    documents = stack.settled(client, ids + live, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()


def test_a_429_pause_of_the_real_time_lane_holds_the_bulk_lane(make_stack, grok):
    grok.inject({"status": 429, "retry_after": "5"})
    stack = make_stack(**BULK, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    live = post_all(client, ["Where is my order?"])
    wait_until(
        lambda: "bulk lane held" in (log := worker_log(stack)) and "429" in log,
        timeout=20,
        message="the bulk lane to see the pause",
    )
    ids = post_bulk(client, [f"Late parcel {n}" for n in range(3)])

    documents = stack.settled(client, ids + live, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()


def test_a_batch_xai_refuses_outright_spends_no_attempt_and_names_why(make_stack, grok, database_env):
    """xAI cancels the batch itself (``cancel_by_xai_message``, every counter zero): its conversations
    wait for another batch, their attempt given back, so two refusals do not spend ``MAX_RETRIES=2``; and
    none is formed for ``GROK_AUTH_PAUSE_SECONDS`` after a refusal (a refusal of every batch would upload
    the whole backlog again every few seconds, for ever)."""
    grok.configure(batch_delay=0.2, batch_refusal="Batch refused: the model does not support batch processing")
    stack = make_stack(**BULK, MAX_RETRIES=2, GROK_AUTH_PAUSE_SECONDS=2, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Refund order {n}" for n in range(7)])

    def refused() -> list[tuple]:
        return [row for row in provider_batches(stack) if row[1] and row[1].startswith("refused by xAI")]

    wait_until(lambda: len(refused()) >= 2, timeout=30, message="two batches refused by xAI")
    assert refused()[0][1] == "refused by xAI: Batch refused: the model does not support batch processing"
    assert "does not support batch processing" in worker_log(stack)
    grok.configure(batch_refusal="")
    moments = stack.sql("SELECT created_at, ended_at FROM provider_batches ORDER BY created_at")[:2]
    [(_, first_ended), (second_formed, _)] = [tuple(datetime.fromisoformat(str(t)) for t in row) for row in moments]
    assert (second_formed - first_ended).total_seconds() >= 2, "none formed for the pause after a refusal"

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    batches = grok.control.get("/batches").json()["batches"]
    refusals = [b for b in batches if b.get("cancel_by_xai_message")]
    assert len(refusals) >= 2 and {sum(b["state"].values()) for b in refusals} == {0}


@pytest.mark.parametrize("shape", ["object", "empty"])
def test_a_request_error_of_any_shape_fails_only_its_own_conversation(make_stack, grok, shape):
    """A failed request written as an object (``error: {code, message}``) or as an empty ``batch_result``
    is an error like ``error_message``: its conversations come back alone, and only the culprit fails."""
    grok.configure(batch_delay=0.2, batch_error_shape=shape)
    stack = make_stack(**BULK, MAX_RETRIES=2, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, ["Order 1 is late", "REFUSE to read this", "Order 3 is late"])

    documents = {d["conversation_id"]: d for d in stack.settled(client, ids, timeout=60)}
    assert [documents[i]["status"] for i in ids] == ["completed", "failed", "completed"], stack.log_text()
    expected = "holds no chat completion" if shape == "empty" else "Content violates usage guidelines"
    assert expected in documents[ids[1]]["last_error"]
    assert {documents[i]["attempts"] for i in ids} == {2}


def test_a_batch_xai_refuses_while_its_requests_are_added_ends_without_spending_an_attempt(make_stack, grok):
    """101 requests go in two calls; xAI refuses the batch after the first, so the second is refused: the
    lane reads why from the batch's state and gives its conversations back, instead of adding for ever."""
    grok.configure(batch_delay=0.2, batch_refusal="Batch refused: too many requests from this team")
    many = {"BATCH_SIZE": 1, "BULK_BATCH_CONVERSATIONS": 101, "BULK_FLUSH_SECONDS": 600}
    stack = make_stack(**{**BULK, **many}, MAX_RETRIES=2, GROK_AUTH_PAUSE_SECONDS=1, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Refund order {n}" for n in range(101)])

    wait_until(
        lambda: any(row[1] and row[1].startswith("refused by xAI") for row in provider_batches(stack)),
        timeout=30,
        message="the batch refused by xAI",
    )
    grok.configure(batch_refusal="")

    documents = stack.settled(client, ids, timeout=90)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    assert stack.sql("SELECT COUNT(*) FROM provider_batch_requests WHERE submitted = 0")[0][0] >= 1, (
        "a refused batch kept the request it could not add"
    )
