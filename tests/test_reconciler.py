"""The reconciler, in process on real Redis and both databases: what counts as a lost message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis
from support import ROOT
from support.databases import IN_PROCESS_REDIS_DB, redis_url

from store import claims, queries
from store.models import Conversation


def stale(count: int, seconds_ago: float) -> list[str]:
    when = queries.utcnow() - timedelta(seconds=seconds_ago)
    ids = [f"stale-{n}" for n in range(count)]
    queries.insert_conversations([queries.NewConversation(i, "{}", f"h-{i}", when, when) for i in ids])
    Conversation.update(updated_at=when).where(Conversation.id.in_(ids)).execute()
    return ids


def test_a_backlog_in_the_analysis_queue_stretches_the_lease(db):
    from actors.broker import settings
    from actors.reconciler import reconcile_once

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    ids = stale(3, seconds_ago=settings().requeue_seconds + 100)
    backlog = int(200 * settings().outbound_rps)  # 200 s of batches still to analyze before theirs
    client.hset(
        "insights:analyze.msgs", mapping={f"m{n}": json.dumps({"args": [[f"other-{n}"]]}) for n in range(backlog)}
    )

    assert reconcile_once() == 0, "they wait behind the backlog; their messages are not lost"
    client.delete("insights:analyze.msgs")
    assert reconcile_once() == 3, "no backlog: a conversation past its lease has lost its message"
    assert [sorted(json.loads(raw)["args"][0]) for raw in client.hvals("insights:collect.msgs")] == [ids], "one message"


def test_a_dead_workers_batches_go_again_whole_and_ahead_of_the_backlog(db):
    """A worker killed mid-call held two batches: once its lease lapses, each goes again as the batch it
    was, on the queue that does not wait behind the backlog, and only once."""
    from actors.broker import AGAIN_QUEUE, queue_key
    from actors.reconciler import reconcile_once
    from store import workers

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    ids = stale(5, seconds_ago=1)
    client.hset(queue_key("analyze", "msgs"), mapping={f"m{n}": "{}" for n in range(5000)})  # a backlog
    workers.renew("killed", 60)
    first = claims.claim_for_processing(ids[:3], max_attempts=3, worker="killed")
    second = claims.claim_for_processing(ids[3:], max_attempts=3, worker="killed")
    assert reconcile_once() == 0, "its lease holds: its calls may still answer"

    workers.renew("killed", -1)
    assert reconcile_once() == 5
    sent = [json.loads(raw) for raw in client.hvals(queue_key(AGAIN_QUEUE, "msgs"))]
    assert sorted(sorted(message["args"][0]) for message in sent) == [ids[:3], ids[3:]]
    assert len(first.conversations) == 3 and len(second.conversations) == 2
    assert {message["actor_name"] for message in sent} == {"analyze_batch"}
    assert reconcile_once() == 0, "sent once"
    assert {row.status for row in Conversation.select()} == {"queued"}


# Run by two processes at once: wait for the agreed moment, then migrate or reclaim; print what it did.
RACE_SCRIPT = """
import json, sys, time
from settings import load_settings
from store import claims, queries
from store.db import open_database
from store.migrations import migrate

db = open_database(load_settings())
cutoff = queries.utcnow()  # what a reconciler sends again is older than this; what it touched is newer
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
if sys.argv[1] == "migrate":
    print(json.dumps(migrate(db)))
else:
    taken = []
    while batch := claims.reclaim_stale(cutoff, cutoff, limit=7):
        taken += batch
    print(json.dumps(taken))
"""


def race(what: str, env: dict[str, str]) -> list[list[str]]:
    """``what`` (migrate or reclaim) in two processes released at the same moment; what each did."""
    moment = time.time() + 2
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACE_SCRIPT, what, str(moment)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _out, err in outputs]
    return [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]


@pytest.mark.processes
def test_two_processes_starting_together_migrate_once_and_reclaim_each_conversation_once(database_env, tmp_path):
    env = {**os.environ, **database_env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url(IN_PROCESS_REDIS_DB)}
    first, second = race("migrate", env)
    assert sorted([first, second], key=len)[0] == [] and len(max(first, second, key=len)) >= 5, (first, second)

    from settings import load_settings
    from store.db import open_database

    database = open_database(load_settings(env))
    ids = stale(60, seconds_ago=10)
    database.close()
    first, second = race("reclaim", env)
    assert not set(first) & set(second), "no stale conversation is sent by both"
    assert sorted(first + second) == sorted(ids)


def test_beside_a_dead_workers_conversations_a_live_ones_stay_in_its_call(db):
    """The reconciler tells the workers apart: the killed one's ``processing`` rows go again, the live
    one's, claimed as recently, stay ``processing`` (its call may still answer) and are sent nowhere."""
    from actors.broker import AGAIN_QUEUE, queue_key
    from actors.reconciler import reconcile_once
    from store import workers

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    ids = stale(3, seconds_ago=1)
    for worker, claimed in (("killed", ids[:2]), ("alive", ids[2:])):
        workers.renew(worker, 60)
        claims.claim_for_processing(claimed, max_attempts=3, worker=worker)
    workers.renew("killed", -1)

    assert reconcile_once() == 2
    assert {c.id: c.status for c in Conversation.select()} == {ids[0]: "queued", ids[1]: "queued", ids[2]: "processing"}
    assert [sorted(json.loads(raw)["args"][0]) for raw in client.hvals(queue_key(AGAIN_QUEUE, "msgs"))] == [ids[:2]]
    assert client.hlen(queue_key("collect", "msgs")) == 0
