"""Crashes while Grok calls are in flight, on real processes against the emulator: a worker SIGKILLed, a
Redis wipe, a database that refuses to store. Nothing is lost, nothing analyzed or stored twice."""

from __future__ import annotations

from support import wait_until
from support.traffic import FAST_RETRIES, IN_FLIGHT, post_all, wait_for_a_call_in_flight, worker_log

from local.embedded_redis import EmbeddedRedis


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(make_stack, grok, database_env):
    """Killed while the database says ``processing`` and no call has been answered yet: only the reconciler
    can bring those conversations back (Dramatiq would redeliver the dead worker's messages only after a
    minute), within a lease and some slack."""
    grok.configure(latency=2)
    stack = make_stack(**IN_FLIGHT, **grok.env, **database_env)
    client = stack.start_web()
    ids = post_all(client, [f"Order {n} is late, please help" for n in range(8)])
    worker = stack.start_worker()
    wait_for_a_call_in_flight(stack, grok)
    stack.kill(worker)

    stack.start_worker()
    documents = stack.settled(client, ids, timeout=30)
    assert {d["status"] for d in documents} == {"completed"}
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (8, 8)


def test_a_redis_wipe_mid_batch_loses_and_duplicates_nothing(make_stack, grok, database_env):
    """Redis loses everything while calls are in flight and more work waits in the stream: the batching
    stream, its consumer group, the queues and the outbound gate's state. The calls in flight still store
    their results, the reconciler re-sends the rest, and new conversations flow through a recreated stream."""
    grok.configure(latency=2)
    stack = make_stack(**IN_FLIGHT, **grok.env, **database_env)
    client = stack.start_web()
    ids = post_all(client, [f"Order {n} is late, please help" for n in range(12)])
    stack.start_worker(threads=2)  # two batches in flight, the third waits in Redis
    wait_for_a_call_in_flight(stack, grok)
    stack.redis.flushdb()

    ids += post_all(client, [f"Posted after the wipe {n}" for n in range(3)])
    documents = stack.settled(client, ids, timeout=30)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (15, 15)


def test_an_answer_paid_for_is_stored_though_redis_went_away_during_its_call(make_stack, grok, tmp_path):
    """Redis goes away while a call is in flight: its answer, paid for, is stored, without the notes kept in
    Redis about it (the tokens it used), and nothing is sent twice. Before, a note that could not be kept
    threw the answer away and the batch waited to be sent again."""
    socket_path = tmp_path / "redis.sock"
    server = EmbeddedRedis(socket_path=socket_path)
    try:
        grok.configure(latency=3)
        stack = make_stack(REDIS_URL=f"unix://{socket_path}", OUTBOUND_TPM=1_000_000, **FAST_RETRIES, **grok.env)
        client = stack.start_web()
        stack.start_worker()
        ids = post_all(client, [f"Order {n} is late, please help" for n in range(3)])
        wait_until(lambda: grok.control.get("/received").json(), timeout=30, message="the call sent")
        server.stop()

        documents = stack.settled(client, ids, timeout=30)
        assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
        assert len(grok.log()) == 1, "answered once, sent once"
        assert "an answer is stored without its note (settle)" in worker_log(stack)
    finally:
        server.stop()


STORE_FAULT = [
    "CREATE TABLE store_fault (reason TEXT)",
    "INSERT INTO store_fault VALUES ('injected: the database refuses to complete conversations')",
    "CREATE TRIGGER store_fault_trigger BEFORE UPDATE OF status ON conversations "
    "WHEN NEW.status = 'completed' AND EXISTS (SELECT 1 FROM store_fault) "
    "BEGIN SELECT RAISE(ABORT, 'injected store failure'); END",
]


def test_a_failing_store_is_retried_without_a_second_grok_call(make_stack, grok):
    """The database refuses to settle the batch (a trigger fails the transaction that completes it): the
    result goes to the store step, which Dramatiq retries until the database accepts it; Grok is called
    once."""
    stack = make_stack(MAX_RETRIES=5, **FAST_RETRIES, **grok.env)
    client = stack.start_web()
    for statement in STORE_FAULT:
        stack.sql(statement)
    stack.start_worker()
    [conversation_id] = post_all(client, ["My refund never arrived."])
    wait_until(
        lambda: "the store step will retry it" in worker_log(stack) and "Retrying message" in worker_log(stack),
        timeout=30,
        message="the store to fail and be retried",
    )
    assert stack.conversations(client, [conversation_id])[0]["status"] == "processing"
    stack.sql("DELETE FROM store_fault")
    [document] = stack.settled(client, [conversation_id], timeout=60)
    assert (document["status"], document["attempts"]) == ("completed", 1)
    assert len(grok.log()) == 1, "the analysis is not paid for twice"
