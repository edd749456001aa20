"""Webhooks on real processes: web and worker with the offline analyzer, and the webhook receiver over HTTPS
(a certificate from a throwaway authority the worker trusts through ``WEBHOOK_CA_FILE``).

Signatures verify with the ``standardwebhooks`` package, as a client's would; a receiver down for a while
then up gets every event once; a worker killed after the commit and before the send loses nothing; an
address inside is refused at registration and at delivery."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from support import ROOT, wait_until
from support.cli import INSIGHTS
from support.databases import empty_postgres
from support.grok import max_calls_in_any_window
from support.openapi import assert_matches
from support.traffic import post_all

from webhooks import events

FAST = {"BATCH_SIZE": 5, "BATCH_FLUSH_SECONDS": 0.2, "WEBHOOK_DISPATCH_SECONDS": 0.1}
TEXTS = [f"My invoice {n} is wrong, please refund it." for n in range(6)]


@pytest.fixture
def hooked(make_stack, receiver):
    """A stack whose worker may call the receiver (allow-listed: it listens on loopback), and a factory of
    subscriptions to it whose secrets the receiver verifies."""
    return hook_up(make_stack(**FAST, WEBHOOK_ALLOW_HOSTS="localhost", WEBHOOK_CA_FILE=receiver.ca_file), receiver)


def hook_up(stack, receiver):
    """Start ``stack``'s web process, and give it ``subscribe``: a subscription to ``receiver``."""
    stack.client = stack.start_web()

    def subscribe(**body: object) -> dict:
        made = stack.client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [events.COMPLETED], **body})
        assert made.status_code == 201, made.text
        receiver.configure(secrets=[made.json()["secret"]])
        return made.json()

    stack.subscribe = subscribe
    return stack


def accepted_events(receiver, count: int, timeout: float = 60) -> list[dict]:
    """Wait for ``count`` distinct events answered 2xx; return the records of those requests."""

    def done() -> list[dict] | None:
        return receiver.received() if receiver.stats()["distinct_event_ids"] >= count else None

    return wait_until(done, timeout=timeout, interval=0.25, message=lambda: f"{count} events: {receiver.stats()}")


def test_completions_arrive_signed_in_the_standard_webhooks_shape(hooked, receiver):
    subscription = hooked.subscribe()
    assert subscription["secret"].startswith("whsec_") and subscription["events"] == [events.COMPLETED]
    listed = hooked.client.get("/api/v1/webhooks").json()["webhooks"]
    assert [w["id"] for w in listed] == [subscription["id"]] and "secret" not in listed[0]
    hooked.start_worker()
    ids = post_all(hooked.client, TEXTS)
    records = accepted_events(receiver, len(ids))
    assert all(record["verified"] is True for record in records), "verified by the standardwebhooks package"
    delivered = [event for record in records for event in record["events"]]
    assert sorted(event["data"]["conversation_id"] for event in delivered) == sorted(ids)
    document = hooked.client.get("/openapi.json").json()
    for record in records:
        [event] = record["events"]
        assert_matches(document, "ConversationEvent", event)
        assert record["headers"]["webhook-id"] == event["data"]["event_id"]
        assert event["type"] == events.COMPLETED and set(event) == {"type", "timestamp", "data"}
        assert event["data"]["status"] == "completed" and -1 <= event["data"]["insight"]["sentiment_score"] <= 1
    statuses = {document["status"] for document in hooked.conversations(hooked.client, ids)}
    assert statuses == {"completed"}


def test_a_subscription_that_asks_for_batches_gets_several_events_a_request(hooked, receiver):
    hooked.subscribe(batch_size=10)
    ids = post_all(hooked.client, TEXTS)  # all committed before the worker starts: they go out together
    hooked.start_worker()
    records = accepted_events(receiver, len(ids))
    assert any(len(record["events"]) > 1 for record in records)
    assert all(record["verified"] for record in records)
    batch = next(record for record in records if len(record["events"]) > 1)
    assert batch["headers"]["webhook-id"].startswith("msg_batch_")
    assert_matches(hooked.client.get("/openapi.json").json(), "EventBatch", json.loads(batch["body"]))


def test_a_subscription_is_called_at_its_pace(hooked, receiver):
    """Twelve events waiting at WEBHOOK_RPS=4 leave (1 s + margin) / 4 apart, each when its slot comes (it
    waits on the worker's event loop, not in a delayed message): the receiver never counts five in a second
    once the process's first request is out (that one meets everything cold, its connection and TLS
    included). The margin is this busy machine's: its processes delay a request on its way by tens of
    milliseconds at times."""
    hooked.subscribe()
    hooked.env.update(WEBHOOK_RPS="4", RATE_MARGIN_MS="150")
    ids = post_all(hooked.client, [f"Parcel {n} is late." for n in range(12)])
    hooked.start_worker()
    records = accepted_events(receiver, len(ids))
    arrivals = sorted(record["t"] for record in records)
    assert max_calls_in_any_window(arrivals[1:]) <= 4, arrivals
    assert arrivals[-1] - arrivals[1] >= 10 * 1.15 / 4 * 0.95, "no faster than the pace"


def test_a_receiver_down_for_a_while_then_up_gets_every_event_once(hooked, receiver):
    hooked.subscribe()
    receiver.stop()
    hooked.env["WEBHOOK_RETRY_SCHEDULE"] = "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1"
    hooked.start_worker()
    ids = post_all(hooked.client, TEXTS)
    hooked.settled(hooked.client, ids)
    wait_until(
        lambda: hooked.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE attempts >= 2")[0][0] == len(ids),
        timeout=60,
        message="every delivery to fail twice",
    )
    receiver.start()
    receiver.configure(secrets=[hooked.sql("SELECT secret FROM webhook_subscriptions")[0][0]])
    accepted_events(receiver, len(ids))
    time.sleep(2)  # a second delivery of any of them would come within a retry's delay
    stats = receiver.stats()
    assert stats["distinct_event_ids"] == len(ids) and stats["duplicates"] == 0, stats
    wait_until(  # on a busy machine the worker may record the last answers after the receiver counted them
        lambda: (
            hooked.sql("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status") == [("delivered", len(ids))]
        ),
        timeout=30,
        message="every delivery recorded as delivered",
    )


def test_a_worker_killed_between_the_commit_and_the_send_loses_nothing(hooked, receiver):
    hooked.subscribe()
    hooked.env["WEBHOOK_DISPATCH_SECONDS"] = "3600"  # this worker commits events but never sends them
    silent = hooked.start_worker()
    ids = post_all(hooked.client, TEXTS)
    hooked.settled(hooked.client, ids)
    assert hooked.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'") == [(len(ids),)]
    hooked.kill(silent)
    assert receiver.stats()["requests"] == 0
    hooked.env["WEBHOOK_DISPATCH_SECONDS"] = "0.1"
    hooked.start_worker()
    accepted_events(receiver, len(ids))


def test_on_postgresql_events_wait_out_a_killed_worker_and_arrive_once_each(make_stack, receiver, postgres_server_url):
    empty_postgres(postgres_server_url)
    env = {"WEBHOOK_ALLOW_HOSTS": "localhost", "WEBHOOK_CA_FILE": receiver.ca_file, "DATABASE_URL": postgres_server_url}
    stack = hook_up(make_stack(**FAST, **env), receiver)
    stack.subscribe(batch_size=2)
    stack.env["WEBHOOK_DISPATCH_SECONDS"] = "3600"  # this worker commits events but never sends them
    silent = stack.start_worker()
    ids = post_all(stack.client, TEXTS)
    stack.settled(stack.client, ids)
    stack.kill(silent)
    stack.env["WEBHOOK_DISPATCH_SECONDS"] = "0.1"
    stack.start_worker(processes=2)  # two dispatchers claim from one outbox
    records = accepted_events(receiver, len(ids))
    assert sorted(e["data"]["conversation_id"] for r in records for e in r["events"]) == sorted(ids)
    assert receiver.stats()["duplicates"] == 0 and all(record["verified"] for record in records)


def test_a_worker_killed_with_requests_in_flight_sends_them_again_once_their_lease_ends(hooked, receiver):
    hooked.subscribe()
    hooked.env["WEBHOOK_LEASE_SECONDS"] = "3"
    receiver.configure(latency_ms=30_000)  # every request hangs: the worker dies with them in flight
    first = hooked.start_worker()
    ids = post_all(hooked.client, TEXTS[:2])
    wait_until(lambda: receiver.stats()["requests"] >= 2, timeout=60, message="requests in flight")
    hooked.kill(first)
    receiver.configure(latency_ms=0)
    hooked.start_worker()
    records = accepted_events(receiver, len(ids))
    assert {e["data"]["conversation_id"] for r in records if r["status"] == 200 for e in r["events"]} == set(ids)


def test_an_address_inside_is_refused_at_registration_and_again_at_delivery(hooked, receiver):
    refused = hooked.client.post(
        "/api/v1/webhooks", json={"url": "https://10.0.0.7/in", "events": ["conversation.failed"]}
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "url_refused"
    assert "10.0.0.7 is a private address" in refused.json()["error"]["message"]
    unknown = hooked.client.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["conversation.done"]})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "validation_failed"
    hooked.subscribe()  # allowed in the web process, which shares the stack's allow list...
    hooked.env["WEBHOOK_ALLOW_HOSTS"] = ""  # ...but not in the worker's: it re-checks at every connection
    hooked.env["WEBHOOK_RETRY_SCHEDULE"] = "0.5"
    hooked.start_worker()
    [conversation_id] = post_all(hooked.client, TEXTS[:1])
    wait_until(
        lambda: hooked.sql("SELECT status, last_error FROM webhook_deliveries"),
        timeout=60,
        message="a delivery",
    )
    dead = wait_until(
        lambda: hooked.sql("SELECT last_error FROM webhook_deliveries WHERE status = 'failed'"),
        timeout=60,
        message="the delivery to be a dead letter",
    )
    assert "is a loopback address; only public addresses may receive webhooks" in dead[0][0]
    assert receiver.stats()["requests"] == 0, "nothing reached the receiver"
    assert conversation_id


def test_a_receiver_gone_disables_its_subscription_and_operators_replay_dead_letters(hooked, receiver):
    subscription = hooked.subscribe()
    receiver.configure(mode="gone")
    hooked.start_worker()
    [first] = post_all(hooked.client, TEXTS[:1])
    wait_until(
        lambda: not hooked.client.get(f"/api/v1/webhooks/{subscription['id']}").json()["enabled"],
        timeout=60,
        message="the subscription to be disabled",
    )
    stats = json.loads(insights(hooked, "stats", "--json").stdout)
    assert stats["webhook_deliveries"] == {"pending": 0, "delivered": 0, "failed": 1}
    cli = insights(hooked, "webhooks", "deliveries", "--failed", "--json")
    assert cli.returncode == 0 and first in hooked.sql("SELECT body FROM webhook_deliveries")[0][0]
    assert '"last_status": 410' in cli.stdout
    receiver.configure(mode="ok")
    assert insights(hooked, "webhooks", "enable", subscription["id"]).returncode == 0
    replayed = insights(hooked, "webhooks", "replay")
    assert replayed.stdout.strip() == "replayed 1 delivery(ies)"
    records = accepted_events(receiver, 1)
    assert records[-1]["events"][0]["data"]["conversation_id"] == first


def test_a_redirect_is_not_followed_and_a_huge_answer_is_not_read(hooked, receiver):
    """A receiver that redirects (perhaps to an address inside) fails the attempt; one whose answer is
    endless is delivered once its status is known: the sender reads a few kilobytes, not 100 GB (minutes on
    loopback)."""
    hooked.subscribe()
    receiver.faults({"redirect": "https://169.254.169.254/latest/meta-data"}, {"big_body": 100 * 10**9})
    hooked.env["WEBHOOK_RETRY_SCHEDULE"] = "0.5"
    hooked.start_worker()
    post_all(hooked.client, TEXTS[:1])
    wait_until(
        lambda: hooked.sql("SELECT status, attempts FROM webhook_deliveries") == [("delivered", 1)],
        timeout=60,
        message="the delivery, on its second attempt",
    )
    assert [record["status"] for record in receiver.received()] == [307, 200]


def test_a_receiver_answering_429_holds_its_subscription_for_its_retry_after(hooked, receiver):
    """A 429 asks the sender to slow down: nothing goes to that subscription until its Retry-After has
    passed, the refused event comes again after it (not after the schedule's half second), and every event
    arrives once."""
    hooked.subscribe()
    receiver.faults({"status": 429, "retry_after": "3"})
    hooked.env["WEBHOOK_RETRY_SCHEDULE"] = "0.5"
    hooked.start_worker()
    post_all(hooked.client, TEXTS[:1])
    refused = wait_until(receiver.received, timeout=60, message="the first request")[0]
    assert refused["status"] == 429
    post_all(hooked.client, TEXTS[1:4])
    records = accepted_events(receiver, 4)
    later = [record["t"] for record in records if record["t"] > refused["t"]]
    assert len(later) == len(records) - 1 and min(later) >= refused["t"] + 3 - 0.1, "nothing before the hold's end"
    stats = receiver.stats()
    assert (stats["accepted_events"], stats["duplicates"]) == (4, 0)
    wait_until(  # the receiver has them all; the worker records the last answer a moment later
        lambda: hooked.sql("SELECT DISTINCT status FROM webhook_deliveries") == [("delivered",)],
        timeout=30,
        message="every delivery recorded as delivered",
    )


def test_a_slow_receiver_never_delays_analysis(hooked, receiver):
    """Requests to a receiver that hangs wait as coroutines, not in the worker's four threads: were they
    threads, the first five would hold all four for 30 s and the other conversations would wait that long."""
    hooked.subscribe()
    receiver.configure(latency_ms=60_000)
    hooked.env["WEBHOOK_TIMEOUT_SECONDS"] = "30"
    hooked.start_worker()
    first = post_all(hooked.client, TEXTS[:5])
    hooked.settled(hooked.client, first)
    leased = "SELECT COUNT(*) FROM webhook_deliveries WHERE lease_token IS NOT NULL"
    wait_until(lambda: hooked.sql(leased)[0][0] >= 5, timeout=30, message="requests on their way to the receiver")
    time.sleep(1)  # they reach it, and hang there (the receiver records a request once it answers)
    later = post_all(hooked.client, [f"Where is parcel {n}?" for n in range(20)])
    hooked.settled(hooked.client, later, timeout=20)
    assert hooked.sql("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'delivered'") == [(0,)]


def test_a_request_has_the_timeout_in_all_then_is_tried_again(hooked, receiver):
    hooked.subscribe()
    receiver.faults({"delay": 5})
    hooked.env.update(WEBHOOK_TIMEOUT_SECONDS="1", WEBHOOK_RETRY_SCHEDULE="0.5")
    hooked.start_worker()
    post_all(hooked.client, TEXTS[:1])
    accepted_events(receiver, 1)
    assert hooked.sql("SELECT status, attempts, last_status FROM webhook_deliveries") == [("delivered", 1, 200)]
    both = wait_until(lambda: len(records := receiver.received()) == 2 and records, timeout=10, message="two requests")
    first, second = sorted(both, key=lambda record: record["t"])
    assert first["client_gone"] and second["status"] == 200
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]


def insights(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    return subprocess.run([str(INSIGHTS), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
