"""The reconciler, in process on real Redis and both databases: what counts as a lost message."""

from __future__ import annotations

import json
from datetime import timedelta

import redis

from conftest import IN_PROCESS_REDIS_DB, redis_url
from store import queries
from store.models import Conversation


def stale(count: int, seconds_ago: float) -> list[str]:
    when = queries.utcnow() - timedelta(seconds=seconds_ago)
    ids = [f"stale-{n}" for n in range(count)]
    queries.insert_conversations([queries.NewConversation(i, "{}", f"h-{i}", when) for i in ids])
    Conversation.update(updated_at=when).where(Conversation.id.in_(ids)).execute()
    return ids


def test_a_backlog_in_the_analysis_queue_stretches_the_lease(db):
    from actors.broker import settings
    from actors.reconciler import reconcile_once

    client = redis.Redis.from_url(redis_url(IN_PROCESS_REDIS_DB))
    client.flushdb()
    ids = stale(3, seconds_ago=settings.lease_seconds + 100)
    backlog = int(200 * settings.outbound_rps)  # 200 s of batches still to analyze before theirs
    client.hset("dramatiq:analyze.msgs", mapping={f"m{n}": json.dumps({"args": [[f"other-{n}"]]}) for n in range(backlog)})

    assert reconcile_once() == 0, "they wait behind the backlog; their messages are not lost"
    client.delete("dramatiq:analyze.msgs")
    assert reconcile_once() == 3, "no backlog: a conversation past its lease has lost its message"
    assert sorted(json.loads(raw)["args"][0] for raw in client.hvals("dramatiq:collect.msgs")) == ids
