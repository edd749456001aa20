"""The database goes away and comes back (PostgreSQL behind a proxy that cuts it): web and worker answer
with a clear 503 while it is down, never a traceback, and everything flows again once it is back.

SQLite is a file inside each process, not a server that can be down; its failures (a full disk, a lock held
too long) surface as the same ``OperationalError`` and take the same path.
"""

from __future__ import annotations

import time

import pytest
from support import wait_until
from support.traffic import IN_FLIGHT, conversation, post_all, wait_for_a_call_in_flight

pytestmark = pytest.mark.timeout(180)


def test_the_database_down_is_a_503_naming_it_and_the_work_flows_once_it_is_back(make_stack, grok, database_proxy):
    proxy, database_url = database_proxy
    grok.configure(latency=2)
    stack = make_stack(DATABASE_URL=database_url, **IN_FLIGHT, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = post_all(client, [f"My parcel {n} never came" for n in range(4)])
    wait_for_a_call_in_flight(stack, grok)  # through the proxy: stack.sql uses DATABASE_URL

    proxy.cut()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
    assert ready.json()["error"]["checks"]["database"] != "ok" and ready.json()["error"]["checks"]["redis"] == "ok"
    for answer in (
        client.post("/api/v1/conversations", json=conversation("While it is down")),
        client.get(f"/api/v1/conversations/{ids[0]}"),
        client.get(
            "/api/v1/insights", params={"start_time": "2026-01-01T00:00:00Z", "end_time": "2027-01-01T00:00:00Z"}
        ),
    ):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "database_unavailable" and answer.headers["Retry-After"] == "1"
        assert "Traceback" not in answer.text
    scrape = client.get("/metrics")
    assert scrape.status_code == 200 and "insights_database_up 0.0" in scrape.text
    wait_until(lambda: grok.log(), timeout=10, message="the call in flight to be answered while the database is away")

    proxy.restore()
    ids += post_all(client, ["Posted once it is back"])
    documents = stack.settled(client, ids, timeout=60)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
    assert stack.sql("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights")[0] == (5, 5)
    assert "Traceback" not in (stack.logs / f"web-{stack.ports[0]}.log").read_text()
    worker_log = next(stack.logs.glob("worker-*.log"))
    failed_rounds = worker_log.read_text().count("reconciler round failed")
    time.sleep(3 * IN_FLIGHT["RECONCILE_INTERVAL_SECONDS"])
    assert worker_log.read_text().count("reconciler round failed") == failed_rounds, "the reconciler works again"
