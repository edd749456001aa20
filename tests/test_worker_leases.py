"""Worker leases on real processes against the emulator: a live worker's calls are never sent twice,
however long they take; a killed worker's conversations are taken back once its lease lapses, each sent
once; a worker told to stop gives its calls in flight back at once."""

from __future__ import annotations

import signal
import time
from collections import Counter

from support import wait_until
from support.traffic import FAST_RETRIES, post_all

SHORT_LEASE = {"BATCH_SIZE": 4, "LEASE_SECONDS": 3, "RECONCILE_INTERVAL_SECONDS": 0.3, **FAST_RETRIES}
"""A lease far shorter than a call: only its renewal keeps the calls in flight from being sent again."""


def sent_ids(grok) -> Counter:
    """How many calls carried each conversation."""
    return Counter(i for entry in grok.log() for i in entry["ids"])


def test_a_call_longer_than_the_lease_is_sent_once(make_stack, grok, database_env):
    grok.configure(latency=8)
    stack = make_stack(**SHORT_LEASE, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_all(client, [f"My parcel {n} never came" for n in range(8)])
    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}
    assert sent_ids(grok) == Counter({i: 1 for i in ids}), "the lease was renewed while the calls were in flight"


def test_a_killed_workers_conversations_are_taken_back_and_sent_once(make_stack, grok, database_env):
    grok.configure(latency=6)
    stack = make_stack(**SHORT_LEASE, **grok.env, **database_env)
    client = stack.start_web()
    ids = post_all(client, [f"Order {n} is late, please help" for n in range(8)])
    first = stack.start_worker()
    wait_until(
        lambda: stack.sql("SELECT COUNT(*) FROM conversations WHERE status = 'processing'")[0][0] == 8,
        timeout=30,
        interval=0.05,
        message="every batch claimed, its call in flight",
    )
    time.sleep(1)  # the calls have left and the emulator has read them (its stamp); they answer after 6 s
    stack.kill(first)
    killed_at = time.time()
    stack.start_worker()

    documents = stack.settled(client, ids, timeout=60)
    assert {d["status"] for d in documents} == {"completed"}
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (8, 8)
    wait_until(lambda: len(grok.log()) >= 4, timeout=10, message="the killed worker's calls logged too")
    recovery = Counter(i for entry in grok.log() if entry["t"] > killed_at for i in entry["ids"])
    assert recovery == Counter({i: 1 for i in ids}), "recovery sends each conversation once"
    assert sent_ids(grok) == Counter({i: 2 for i in ids}), "once by the killed worker, once by its successor"


def test_a_stopping_worker_gives_its_calls_back_at_once(make_stack, grok, database_env):
    """SIGTERM: calls in flight get a grace to answer; those that cannot (60 s calls) are given back, their
    attempt refunded, without waiting for the lease to lapse (a long one here)."""
    grok.configure(latency=60)
    stack = make_stack(BATCH_SIZE=4, LEASE_SECONDS=600, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    ids = post_all(client, [f"Refund {n} please" for n in range(4)])
    first = stack.start_worker()
    wait_until(
        lambda: stack.sql("SELECT COUNT(*) FROM conversations WHERE status = 'processing'")[0][0] == 4,
        timeout=30,
        interval=0.05,
        message="the batch claimed, its call in flight",
    )
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=60)
    assert stack.sql("SELECT status, attempts FROM conversations")[0] == ("queued", 0)

    grok.configure(latency=0)
    stack.start_worker()
    documents = stack.settled(client, ids, timeout=60)
    assert {(d["status"], d["attempts"]) for d in documents} == {("completed", 1)}
