"""Grok at real latency and real limits, on real web and worker processes against the emulator: calls in
flight follow the outbound limit, the token budget holds, and each refusal gets its own reaction."""

from __future__ import annotations

import json
import time

import pytest
from support import wait_until
from support.grok import GrokEmulator
from support.traffic import FAST_RETRIES, POST, conversation, post_all

pytestmark = pytest.mark.timeout(180)


def calls_in_flight(log: list[dict]) -> int:
    """The most calls the emulator was answering at one moment (arrival to answer)."""
    events = sorted([(e["t"], 1) for e in log] + [(e["t"] + e["latency"], -1) for e in log])
    busy = peak = 0
    for _moment, change in events:
        busy += change
        peak = max(peak, busy)
    return peak


def test_calls_in_flight_follow_the_limit_not_a_thread_count(make_stack, tmp_path, postgres_server_url):
    """Out of the box (threads derived from OUTBOUND_RPS), with 2-second calls, about RPS x 2 calls are
    under way at once, and the PostgreSQL connections stay within the pools."""
    grok = GrokEmulator(tmp_path, latency=2.0)
    try:
        stack = make_stack(
            BATCH_SIZE=2, OUTBOUND_RPS=10, DB_POOL_SIZE=4, DATABASE_URL=postgres_server_url, **FAST_RETRIES, **grok.env
        )
        client = stack.start_web()
        ids = post_all(client, [f"Order {n} arrived late again." for n in range(200)])
        stack.start_worker(threads=None)
        connections = []
        wait_until(
            lambda: connections.append(backend_count(stack)) or len(grok.log()) >= 60, timeout=60, message="60 calls"
        )
        assert calls_in_flight(grok.log()) >= 16, "about OUTBOUND_RPS x latency = 20 calls at once"
        assert max(connections) <= 4 + 6 + 2, "worker pool + web threads + the web's committer"
        assert {d["status"] for d in stack.settled(client, ids, timeout=90)} == {"completed"}
    finally:
        grok.stop()


def backend_count(stack) -> int:
    """Connections to the stack's PostgreSQL database, other than this one."""
    return stack.sql("SELECT COUNT(*) - 1 FROM pg_stat_activity WHERE datname = current_database()")[0][0]


def test_a_conversation_refused_for_its_content_fails_alone(make_stack, grok, database_env):
    grok.configure(context=3000)
    stack = make_stack(BATCH_SIZE=20, MAX_RETRIES=3, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    texts = [f"Question {n} about my invoice." for n in range(18)]
    ids = post_all(client, [*texts[:9], "REFUSE this one please", *texts[9:], "word " * 4000])
    documents = {d["conversation_id"]: d for d in stack.settled(client, ids, timeout=60)}
    refused, too_long = documents.pop(ids[9]), documents.pop(ids[-1])
    assert (
        refused["status"] == "failed" and "403" in refused["last_error"] and "usage guidelines" in refused["last_error"]
    )
    assert (
        too_long["status"] == "failed"
        and "400" in too_long["last_error"]
        and "maximum prompt length" in too_long["last_error"]
    )
    assert {(d["status"], d["attempts"]) for d in documents.values()} == {("completed", 1)}, "the neighbours complete"
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["grok"]["state"] == "available", "no pause for one conversation"


def test_an_unknown_model_pauses_work_naming_grok_model(make_stack, grok):
    grok.configure(models="grok-4-fast-non-reasoning")
    stack = make_stack(GROK_MODEL="grok-nonexistent", GROK_AUTH_PAUSE_SECONDS=1.5, **FAST_RETRIES, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_all(client, ["Where is my order?"])
    ready = wait_until(
        lambda: (r := client.get("/readyz")).json()["grok"]["state"] == "misconfigured" and r,
        timeout=20,
        message="the model to be named",
    )
    assert ready.status_code == 200 and "GROK_MODEL='grok-nonexistent'" in ready.json()["grok"]["reason"]
    [document] = stack.conversations(client, ids)
    assert document["status"] in ("queued", "processing") and "GROK_MODEL" in document["last_error"]
    grok.configure(models="grok-nonexistent")
    [document] = stack.settled(client, ids, timeout=30)
    assert (document["status"], document["attempts"]) == ("completed", 1), "a pause spends no attempt"


def test_the_token_budget_is_used_without_refusals(make_stack, tmp_path):
    """The emulator enforces the same tokens per minute as OUTBOUND_TPM: the gate keeps the calls under it
    (at most one refused), uses most of it, and splits a batch bigger than the whole budget."""
    budget = 30_000
    grok = GrokEmulator(tmp_path, args=["--tpm", str(budget)])
    try:
        stack = make_stack(BATCH_SIZE=5, OUTBOUND_TPM=budget, **FAST_RETRIES, **grok.env)
        client = stack.start_web()
        post_all(client, [f"My parcel {n} is late, and the courier says it was delivered. " * 6 for n in range(300)])
        stack.start_worker()

        def admitted() -> int:
            return sum(e["tokens"] for e in grok.log() if e["refused"] is None)

        wait_until(
            lambda: admitted() >= 0.8 * budget, timeout=40, message=f"80 % of {budget} tokens; log: {grok.log()[-3:]}"
        )
        refused = [e for e in grok.log() if e["refused"] == "tpm"]
        assert len(refused) <= 1, refused
    finally:
        grok.stop()


def test_a_batch_over_the_whole_token_budget_is_split_not_stuck(make_stack, grok):
    # Estimated at 1,000 output tokens a conversation at first, a batch of 8 is over the 6,000 budget.
    stack = make_stack(
        BATCH_SIZE=8, OUTBOUND_TPM=6_000, GROK_OUTPUT_TOKENS_PER_CONVERSATION=1000, **FAST_RETRIES, **grok.env
    )
    client = stack.start_web()
    stack.start_worker()
    ids = post_all(client, [f"Refund {n}, please: the item broke." for n in range(8)])
    huge = client.post(POST, json=conversation("x " * 15_000)).json()["conversation_id"]
    documents = {d["conversation_id"]: d for d in stack.settled(client, [*ids, huge], timeout=120)}
    assert {documents[i]["status"] for i in ids} == {"completed"}
    assert documents[huge]["status"] == "failed" and "OUTBOUND_TPM" in documents[huge]["last_error"]
    sent = [e["ids"] for e in grok.log()]
    assert max(map(len, sent)) < 8 and not any(huge in ids for ids in sent), (
        "split before sending; the huge one never sent"
    )


def test_a_pause_longer_than_the_lease_spends_no_attempt_and_multiplies_no_message(make_stack, grok):
    """A 429 whose Retry-After outlasts the requeue timeout: the batches wait (set aside in steps of half
    of it, touching them), conversations posted meanwhile are not failed, no attempt is spent, and no conversation
    is ever in more than one pending batch, however often the reconciler looks. (A timeout of 4 s: with 2 s,
    a step that came a second late on this busy machine met the reconciler.)"""
    stack = make_stack(
        BATCH_SIZE=2, MAX_RETRIES=1, REQUEUE_SECONDS=4, RECONCILE_INTERVAL_SECONDS=0.3, **FAST_RETRIES, **grok.env
    )
    client = stack.start_web()
    stack.start_worker()
    grok.inject({"status": 429, "retry_after": "6"})
    first = post_all(client, ["Where is my order?"])
    wait_until(lambda: grok.log(), timeout=20, message="the 429")
    during = post_all(client, [f"Posted during the pause {n}" for n in range(4)])
    pending = []
    for _ in range(20):  # across the pause: every analysis message waiting, by conversation
        pending.append(analysis_messages_by_conversation(stack))
        time.sleep(0.2)
    # A batch set aside again sends its next message a moment before the current one is acknowledged:
    # two may be seen at one instant, never at two samples running.
    doubled = [
        c for before, after in zip(pending, pending[1:]) for c in before if before[c] > 1 and after.get(c, 0) > 1
    ]
    assert not doubled and max(max(p.values(), default=0) for p in pending) <= 2, pending
    documents = stack.settled(client, first + during, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}
    calls = grok.log()
    assert calls[1]["t"] - calls[0]["t"] >= 5.5, "nobody called before the Retry-After"


def analysis_messages_by_conversation(stack) -> dict[str, int]:
    """How many analysis messages (waiting or delayed) hold each conversation."""
    held: dict[str, int] = {}
    for key in ("insights:analyze.msgs", "insights:analyze.DQ.msgs"):
        for raw in stack.redis.hvals(key):
            for conversation_id in json.loads(raw)["args"][0]:
                held[conversation_id] = held.get(conversation_id, 0) + 1
    return held


def test_a_batch_waiting_for_its_slot_leaves_its_conversations_queued(make_stack, grok):
    """Six one-conversation batches, six threads, one call a second, 2-second calls: the batches waiting
    for their slot in the gate have claimed nothing, so at most the calls under way (about 3) read
    ``processing``, never the six a thread count would claim at once."""
    grok.configure(latency=2)
    stack = make_stack(BATCH_SIZE=1, OUTBOUND_RPS=1, **FAST_RETRIES, **grok.env)
    client = stack.start_web()
    ids = post_all(client, [f"Where is parcel {n}?" for n in range(6)])
    stack.start_worker(threads=6)
    peak, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        counts = dict(stack.sql("SELECT status, COUNT(*) FROM conversations GROUP BY status"))
        peak = max(peak, counts.get("processing", 0))
        if counts.get("completed", 0) == 6:
            break
        time.sleep(0.05)
    assert {d["status"] for d in stack.conversations(client, ids)} == {"completed"}, stack.log_text()
    assert 1 <= peak <= 3, f"{peak} conversations processing at once"
    assert {d["attempts"] for d in stack.conversations(client, ids)} == {1}
