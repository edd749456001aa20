"""The bulk lane on real processes against the emulator's Batch API: a backfill makes no real-time call,
its results are stored like real-time ones, and crashes, errors and expiry lose and duplicate nothing."""

from __future__ import annotations

import json

import pytest
from support import wait_until
from support.cli import insights
from support.traffic import BATCH_POST, BULK, conversation, post_bulk, provider_batches, worker_log

from local.embedded_redis import EmbeddedRedis


def test_a_bulk_backfill_makes_no_real_time_call_and_is_stored_like_one(make_stack, grok, database_env):
    grok.configure(batch_delay=0.5)
    stack = make_stack(**BULK, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"My invoice {n} was charged twice, please refund" for n in range(23)])
    live = client.post("/api/v1/conversations", json=conversation("Where is my parcel?")).json()["conversation_id"]

    documents = stack.settled(client, ids + [live], timeout=60)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
    bulk, [realtime] = documents[:-1], documents[-1:]
    assert {(d["lane"], d["insight"]["lane"], d["attempts"]) for d in bulk} == {("bulk", "bulk", 1)}
    assert {d["provider_batch"] for d in bulk} != {None}
    assert (realtime["lane"], realtime["provider_batch"]) == ("realtime", None)
    assert len(grok.log()) == 1, "only the live conversation was a real-time call"
    overview = grok.control.get("/batches").json()
    assert overview["duplicates"] == 0
    assert sum(b["state"]["num_requests"] for b in overview["batches"]) == 5, "23 conversations, 5 a request"
    [(state, reason, count, prompt_tokens, completion_tokens)] = provider_batches(stack)
    assert (state, reason, count) == ("ended", "completed", 23)
    assert prompt_tokens > 0 and completion_tokens > 0
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights WHERE lane = 'bulk'")[0] == (
        23,
        23,
    )
    summary = client.get(
        "/api/v1/insights/summary", params={"start_time": "2000-01-01T00:00:00Z", "end_time": "2100-01-01T00:00:00Z"}
    ).json()
    by_lane = summary["usage"]
    assert (by_lane["bulk"]["insights"], by_lane["realtime"]["insights"]) == (23, 1)
    assert by_lane["bulk"]["prompt_tokens"] == pytest.approx(prompt_tokens, abs=1), (
        "each insight's share adds up to the batch's"
    )
    assert by_lane["bulk"]["cost_usd"] > 0 and by_lane["bulk"]["insights_without_cost"] == 0


def test_an_error_or_a_truncated_answer_fails_only_its_own_conversation(make_stack, grok, database_env):
    """A request ends in an error (REFUSE) or a truncated answer (POISON): its conversations come back, each
    in a request of its own, so the neighbours complete and only the culprits fail, out of attempts."""
    grok.configure(batch_delay=0.2)
    stack = make_stack(**BULK, MAX_RETRIES=3, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    texts = [f"Order {n} is late" for n in range(8)]
    texts[2], texts[6] = "REFUSE to read this", "POISON pill"
    ids = post_bulk(client, texts)

    documents = stack.settled(client, ids, timeout=60)
    failed = {d["conversation_id"]: d for d in documents if d["status"] == "failed"}
    assert set(failed) == {ids[2], ids[6]}, stack.log_text()
    assert "Content violates usage guidelines" in failed[ids[2]]["last_error"]
    assert "truncated" in failed[ids[6]]["last_error"]
    assert {d["attempts"] for d in failed.values()} == {3}
    assert {d["attempts"] for d in documents if d["status"] == "completed"} == {2}, "one failed request, one retry"
    assert not grok.log()


def test_an_expired_batch_sends_its_conversations_back_to_be_retried(make_stack, grok, database_env):
    grok.configure(batch_delay=60, batch_expiry=1)
    stack = make_stack(**BULK, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Please close my account {n}" for n in range(6)])
    wait_until(
        lambda: [r for r in provider_batches(stack) if r[1] == "expired at xAI"],
        timeout=30,
        message="the provider batch to expire",
    )
    grok.configure(batch_delay=0.2, batch_expiry=0)

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 2)}, stack.log_text()
    assert [r[:2] for r in provider_batches(stack)][:1] == [("ended", "expired at xAI")]
    assert grok.control.get("/batches").json()["duplicates"] == 0


def test_every_worker_killed_and_redis_wiped_while_a_batch_is_open_lose_and_duplicate_nothing(
    make_stack, grok, database_env
):
    """The provider batch and its requests are in the database before anything is sent: the next worker
    polls the same batch at xAI, nothing is submitted again, every conversation gets one insight."""
    grok.configure(batch_delay=3)
    stack = make_stack(**BULK, **grok.env, **database_env)
    client = stack.start_web()
    worker = stack.start_worker(processes=2)
    ids = post_bulk(client, [f"The app crashes on login {n}" for n in range(12)])
    wait_until(
        lambda: stack.sql("SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'")[0][0],
        timeout=30,
        message="a provider batch submitted",
    )
    stack.kill(worker)
    stack.redis.flushdb()
    stack.start_worker()

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    overview = grok.control.get("/batches").json()
    assert overview["duplicates"] == 0 and len(overview["batches"]) == 1
    assert overview["batches"][0]["state"]["num_requests"] == 3
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (12, 12)
    assert "provider batch" in worker_log(stack)
    assert not grok.log()


def test_a_lane_must_be_one_of_the_two(make_stack, database_env):
    stack = make_stack(**database_env)
    client = stack.start_web()
    for path in ("/api/v1/conversations", "/api/v1/conversations/batch"):
        body = conversation() if path.endswith("conversations") else {"conversations": [conversation()]}
        answer = client.post(f"{path}?lane=slow", json=body)
        assert answer.status_code == 400 and "lane" in answer.text, answer.text
        answer = client.post(f"{path}?priority=high", json=body)
        assert answer.status_code == 400 and "priority" in answer.text, answer.text


def test_a_worker_killed_after_xai_took_the_requests_but_before_the_commit_sends_nothing_twice(
    make_stack, grok, database_proxy
):
    """The worker sends the requests, xAI takes them, and the worker dies before recording that (PostgreSQL
    behind a proxy that holds the update). The next worker reads the requests xAI holds
    (``GET /v1/batches/{id}/requests``) before adding any: it sends none again, so each request is in the
    batch once and answered once, whatever xAI would make of a repeated id."""
    proxy, database_url = database_proxy
    grok.configure(batch_delay=0.5)
    stack = make_stack(**BULK, **grok.env, DATABASE_URL=database_url)
    client = stack.start_web()
    ids = post_bulk(client, [f"I was double charged {n}" for n in range(12)])
    proxy.hold(b'SET "submitted"')
    worker = stack.start_worker()
    assert proxy.held.wait(30), "the worker records its requests as sent"
    stack.kill(worker)
    proxy.cut()  # the held statement dies with the worker's connection
    proxy.release()
    proxy.restore()
    stack.start_worker()

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    overview = grok.control.get("/batches").json()
    assert [b["state"]["num_requests"] for b in overview["batches"]] == [3], "each request in the batch once"
    assert overview["duplicates"] == 0, "no request id was sent twice"
    assert "xAI holds 3 request(s) not recorded as sent" in worker_log(stack)
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (12, 12)


def test_an_operator_sees_a_provider_batch_and_cancels_it(make_stack, grok):
    """``insights bulk list|show|cancel``, ``stats`` and the conversation's status name the open batch;
    cancelled, its unanswered conversations wait for another batch, no attempt spent."""
    grok.configure(batch_delay=60)
    stack = make_stack(**BULK, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"Cancel my subscription {n}" for n in range(6)])
    wait_until(
        lambda: stack.sql("SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'")[0][0],
        timeout=30,
        message="a provider batch submitted",
    )

    listed = insights(stack, "bulk", "list", "--json")
    [batch] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (batch["state"], batch["conversations"], batch["num_requests"], batch["num_pending"]) == (
        "submitted",
        6,
        2,
        2,
    )
    assert json.loads(insights(stack, "bulk", "show", batch["id"]).stdout)["provider_id"] == batch["provider_id"]
    assert {(d["status"], d["provider_batch"]) for d in stack.conversations(client, ids)} == {
        ("processing", batch["id"])
    }
    stats = json.loads(insights(stack, "stats", "--json").stdout)["bulk"]
    assert (stats["conversations"]["processing"], stats["provider_batches"]["submitted"]) == (6, 1)
    metrics = client.get("/metrics").text
    assert 'insights_bulk_conversations{status="processing"} 6.0' in metrics
    assert 'insights_provider_batches{state="submitted"} 1.0' in metrics

    assert insights(stack, "bulk", "cancel", batch["id"]).returncode == 0
    wait_until(
        lambda: provider_batches(stack)[0][:2] == ("ended", "cancelled by an operator"),
        timeout=30,
        message="the batch cancelled at xAI and ended",
    )
    grok.configure(batch_delay=0.2)
    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
    again = insights(stack, "bulk", "cancel", batch["id"])
    assert again.returncode == 2 and "no open provider batch" in again.stderr
    assert insights(stack, "bulk", "show", "bulk_nope").returncode == 2


def test_a_batch_xai_never_finishes_is_given_up_and_its_conversations_fail_with_the_reason(make_stack, grok):
    """xAI keeps a batch pending past ``BULK_GIVE_UP_SECONDS``: it is cancelled there and its conversations
    come back, together, until their attempts are spent."""
    grok.configure(batch_delay=600)
    stack = make_stack(**BULK, BULK_GIVE_UP_SECONDS=1, MAX_RETRIES=2, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, ["My invoice is wrong", "Where is my refund?"])

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("failed", 2)}, stack.log_text()
    assert {"not finished by xAI within BULK_GIVE_UP_SECONDS" in d["last_error"] for d in documents} == {True}
    overview = grok.control.get("/batches").json()
    assert [b["state"]["num_cancelled"] for b in overview["batches"]] == [1, 1], "given up, they still share a request"


def test_a_batch_xai_forgets_sends_its_conversations_to_another(make_stack, grok):
    """The Batch API answers 404 for a batch it held (purged, or another account's key): nothing will come
    of it, so its conversations wait for another batch, an attempt spent."""
    grok.configure(batch_delay=600)
    stack = make_stack(**BULK, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, [f"My order {n} never came" for n in range(3)])
    wait_until(
        lambda: stack.sql("SELECT COUNT(*) FROM provider_batches WHERE state = 'submitted'")[0][0],
        timeout=30,
        message="a provider batch submitted",
    )
    grok.control.post("/reset").raise_for_status()  # the emulator forgets every batch
    grok.configure(batch_delay=0.2)

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 2)}, stack.log_text()
    assert "unknown to xAI" in provider_batches(stack)[0][1]


def test_a_batch_that_fails_at_xai_sends_its_conversations_to_another(make_stack, grok):
    """xAI reports the batch failed as a whole (``state.error``), its requests still pending: nothing more
    will come of it, so its conversations wait for another batch at once, not after BULK_GIVE_UP_SECONDS."""
    grok.configure(batch_delay=600, batch_error="internal error")
    stack = make_stack(**BULK, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_bulk(client, ["My order never came", "Refund please"])
    wait_until(
        lambda: [r for r in provider_batches(stack) if r[1] and "failed at xAI" in r[1]],
        timeout=30,
        message="the failed batch ended",
    )
    grok.configure(batch_delay=0.2, batch_error="")

    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 2)}, stack.log_text()
    assert provider_batches(stack)[0][1] == "failed at xAI: internal error"


def test_requests_go_to_xai_in_calls_within_its_size_limit(make_stack, grok):
    """A batch's requests are added in as many calls as keep each within ``BULK_ADD_MAX_BYTES`` (xAI takes 25
    MB a request; here both limits are small). Cut by count alone, the one call was refused (413) at every
    step for ever, its conversations ``processing``."""
    grok.configure(batch_max_add_bytes=1_100_000)
    stack = make_stack(**{**BULK, "BATCH_SIZE": "2"}, BULK_ADD_MAX_BYTES="1048576", **grok.env)
    client = stack.start_web()
    stack.start_worker()
    paragraph = " ".join(f"word{n}" for n in range(3_000))  # 26,000 characters (a message holds 32,000 at most)
    bodies = [{"messages": [{"role": "customer", "content": f"Case {n}: {paragraph}"}] * 4} for n in range(12)]
    answer = client.post(BATCH_POST, json={"conversations": bodies})  # 12 x 104 KB: 1.25 MB in 6 requests
    ids = [result["conversation_id"] for result in answer.json()["results"]]
    assert {d["status"] for d in stack.settled(client, ids, timeout=90)} == {"completed"}, stack.log_text()
    [batch] = grok.control.get("/batches").json()["batches"]
    assert batch["state"]["num_requests"] == 6 and "413" not in stack.log_text()


def test_the_bulk_lane_runs_on_the_database_alone_while_redis_is_away(make_stack, grok, tmp_path):
    """Redis goes away: bulk conversations are still accepted, sent in a provider batch and stored, each on
    its first attempt; what was to be noted in Redis (the personal data masked) is left out meanwhile.
    Before, the note's failure failed every step, and the batch was given up after ``MAX_RETRIES``."""
    socket_path = tmp_path / "redis.sock"
    server = EmbeddedRedis(socket_path=socket_path)
    try:
        grok.configure(batch_delay=0.2)
        stack = make_stack(**BULK, REDIS_URL=f"unix://{socket_path}", MAX_RETRIES=2, **grok.env)
        client = stack.start_web()
        stack.start_worker()
        server.stop()
        ids = post_bulk(client, [f"Call me on +44 20 7946 0{n:03d} about order {n}" for n in range(6)])
        documents = stack.settled(client, ids, timeout=60)
        assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}, stack.log_text()
        assert "without its note (add)" in worker_log(stack)
    finally:
        server.stop()


def test_an_add_calls_parts_keep_order_and_stay_within_the_limit():
    from actors.bulk_requests import ENVELOPE_BYTES, parts_of

    overhead = len('{"t": ""}') + len("r0") + ENVELOPE_BYTES  # a request's bytes beside its text
    sizes = [400, 400, 400, 2_000, 200]  # each request's bytes in the add call
    bodies = {f"r{n}": {"t": "x" * (size - overhead)} for n, size in enumerate(sizes)}
    parts = [list(part) for part in parts_of(bodies, 1_000)]
    assert parts == [["r0", "r1"], ["r2"], ["r3"], ["r4"]], "in order; one too large for any call goes alone"
