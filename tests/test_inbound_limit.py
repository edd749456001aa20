"""The inbound limit holds across two web processes sharing one Redis."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from datetime import datetime

import redis
from peewee import SqliteDatabase
from support.databases import IN_PROCESS_REDIS_DB, redis_url
from support.traffic import conversation

from settings import load_settings

LIMIT = 5


def test_two_web_processes_together_accept_at_most_inbound_rps(make_stack):
    stack = make_stack(INBOUND_RPS=LIMIT)
    clients = [stack.start_web(), stack.start_web()]
    barrier = threading.Barrier(24)

    def post(n: int):
        barrier.wait()
        return clients[n % 2].post("/api/v1/conversations", json=conversation(f"burst {n}"))

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(post, range(24)))

    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(refused) == 24, [r.status_code for r in responses]
    assert len(accepted) >= LIMIT, "the limit should be reached, not undershot"
    for response in refused:
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["retry_after_seconds"] == int(response.headers["retry-after"])

    # Whatever the timing, no one-second span of acceptance times (as committed) holds more than LIMIT.
    with SqliteDatabase(stack.env["DB_PATH"]) as db:
        times = sorted(
            datetime.fromisoformat(row[0]) for row in db.execute_sql("SELECT received_at FROM conversations")
        )
    assert len(times) == len(accepted)
    for i, first in enumerate(times):
        # 0.95 s: received_at is stamped a moment after the limiter counted the request, in another process.
        in_window = [t for t in times[i:] if (t - first).total_seconds() < 0.95]
        assert len(in_window) <= LIMIT, times


def test_deployments_of_different_namespaces_on_one_redis_database_have_limits_of_their_own():
    """One deployment using its whole ``INBOUND_RPS`` leaves the other's untouched, and keeps its key under
    its namespace (the ``limits`` library's own prefix would be ``LIMITS:``)."""
    from api.admission import InboundLimiter

    url = redis_url(IN_PROCESS_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    ours, theirs = (
        InboundLimiter(load_settings({"REDIS_URL": url, "REDIS_NAMESPACE": namespace, "INBOUND_RPS": "1"}))
        for namespace in ("ns-a", "ns-b")
    )

    async def one_each() -> list[tuple[int, int | None]]:
        return [((quota := await limiter.take()).granted, quota.remaining) for limiter in (ours, theirs)]

    assert asyncio.run(one_each()) == [(1, 0), (1, 0)], "each granted its one slot"
    assert {key.split(b":", 1)[0] for key in client.scan_iter()} <= {b"ns-a", b"ns-b"}
