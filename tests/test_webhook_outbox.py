"""The webhooks' outbox in the store, in process on both databases: events written in the transaction of the
change they report (and gone with it when it rolls back), claimed under a lease, retried on the schedule,
dead-lettered, replayed; subscriptions rotated, disabled and enabled."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook
from support import ROOT
from support.openapi import assert_matches
from support.rows import SETTINGS, add, result

from api.openapi import openapi_document
from store import claims, deliveries, outbox, provider_batches, results, subscriptions
from store.models import ProviderBatch, database
from store.queries import utcnow
from store.webhook_models import DELIVERED, FAILED, PENDING, WebhookDelivery
from webhooks import events, signing

SCHEDULE = (5.0, 60.0)  # two retries: three attempts in all


def subscribe(*event_types: str, batch_size: int = 1):
    return subscriptions.create("https://hooks.example.com/in", list(event_types), batch_size, signing.new_secret())


def bodies(subscription_id: str | None = None) -> list[dict]:
    query = WebhookDelivery.select().order_by(WebhookDelivery.id)
    if subscription_id:
        query = query.where(WebhookDelivery.subscription_id == subscription_id)
    return [json.loads(delivery.body) for delivery in query]


def test_a_settlement_writes_an_event_per_conversation_for_each_subscription_that_wants_it(db):
    both = subscribe(events.COMPLETED, events.FAILED)
    failures_only = subscribe(events.FAILED)
    subscribe(events.BATCH_ENDED)
    for conversation_id in ("a", "b", "c"):
        add(conversation_id)
    claim = claims.claim_for_processing(["a", "b", "c"], max_attempts=1)
    results.record_results(result(claim, ["a", "b"], rejected={"c": "a row out of range"}), 1, SETTINGS)

    completed = [b for b in bodies(both.id) if b["type"] == events.COMPLETED]
    assert sorted(b["data"]["conversation_id"] for b in completed) == ["a", "b"]
    insight = completed[0]["data"]["insight"]
    assert insight["sentiment_score"] == 0.5 and insight["confidence"] == 0.8 and insight["model"] == "test-model"
    assert completed[0]["data"]["status"] == "completed" and completed[0]["data"]["occurred_at"].endswith("Z")
    [failed] = [b for b in bodies(both.id) if b["type"] == events.FAILED]
    assert failed["data"] == {
        "event_id": failed["data"]["event_id"],
        "conversation_id": "c",
        "status": "failed",
        "occurred_at": failed["data"]["occurred_at"],
        "reason": "a row out of range",
    }
    assert [b["data"]["conversation_id"] for b in bodies(failures_only.id)] == ["c"]
    for body in bodies():
        assert_matches(openapi_document(SETTINGS), "ConversationEvent", body)
    assert len(bodies()) == 4, "nothing for the subscription that wants only provider_batch.ended"
    ids = [b["data"]["event_id"] for b in bodies()]
    assert len(set(ids)) == 4 and all(i.startswith("msg_") for i in ids)


def test_a_change_rolled_back_leaves_no_event(db):
    subscribe(events.FAILED)
    add("a")
    with pytest.raises(RuntimeError), database.obj.atomic():
        assert claims.fail_open(["a"], "given up") == 1
        assert len(bodies()) == 1
        raise RuntimeError("the transaction fails after the change")
    assert bodies() == []
    assert claims.fail_open(["a"], "given up") == 1
    assert [b["data"]["reason"] for b in bodies()] == ["given up"]
    assert claims.fail_open(["a"], "again") == 0 and len(bodies()) == 1, "a settled one is not failed twice"


def test_a_conversation_out_of_attempts_is_reported_failed_with_why(db):
    subscribe(events.FAILED)
    add("a")
    claim = claims.claim_for_processing(["a"], max_attempts=1)
    claims.requeue_claimed(["a"], "grok: HTTP 500", claim.token)
    claims.claim_for_processing(["a"], max_attempts=1)
    [failed] = bodies()
    assert failed["data"]["reason"] == "grok: HTTP 500 (gave up after 1 attempts)"


def test_an_ended_provider_batch_is_reported(db):
    subscribe(events.BATCH_ENDED)
    now = utcnow()
    ProviderBatch.create(
        id="bulk_1", provider_id="batch_x", claim_token="t", conversations=3, created_at=now, next_look_at=now,
        poll_seconds=1, num_requests=1, num_success=1,
    )  # fmt: skip
    provider_batches.end("bulk_1", "completed")
    [ended] = bodies()
    assert ended["type"] == events.BATCH_ENDED
    assert ended["data"]["batch_id"] == "bulk_1" and ended["data"]["provider_batch_id"] == "batch_x"
    assert ended["data"]["end_reason"] == "completed" and ended["data"]["conversations"] == 3
    assert_matches(openapi_document(SETTINGS), "BatchEndedEvent", ended)


def fail_one(subscription_id: str) -> str:
    add("a")
    claims.fail_open(["a"], "boom")
    [delivery] = WebhookDelivery.select().where(WebhookDelivery.subscription_id == subscription_id)
    return delivery.id


def test_a_claim_holds_its_deliveries_until_an_outcome_under_its_token(db):
    subscription = subscribe(events.FAILED)
    delivery_id = fail_one(subscription.id)
    token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
    assert claimed == [delivery_id]
    assert deliveries.claim(subscription.id, 10, lease_seconds=60)[1] == [], "leased: not claimed twice"
    assert deliveries.delivered(claimed, "another-token", 200) == 0, "a stale request changes nothing"
    assert deliveries.failed(claimed, token, 500, "HTTP 500", SCHEDULE) == {"retry": 1}
    delivery = WebhookDelivery.get_by_id(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_status, delivery.lease_token) == (PENDING, 1, 500, None)
    wait = (delivery.next_attempt_at - utcnow()).total_seconds()
    assert 5 * 0.9 - 1 < wait <= 5 * 1.1, "due again after the schedule's first delay, jittered"
    assert deliveries.claim(subscription.id, 10, lease_seconds=60)[1] == [], "not due yet"


def claimed_request():
    """A failed conversation's delivery, claimed, and the request that carries it (``actors.webhooks``)."""
    from actors.webhooks import Request

    subscription = subscribe(events.FAILED)
    delivery_id = fail_one(subscription.id)
    token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
    return delivery_id, Request(subscription.id, subscription.url, claimed, token, "{}", {}, 0.0)


def test_a_request_whose_answer_could_not_be_recorded_is_a_failed_attempt_not_sent_again_at_once(db):
    """Recording a receiver's answer raised (a bug): the request counts as a failed attempt, due again on the
    retry schedule, so a fault that repeats ends in a dead letter instead of a request sent again and again."""
    from actors.webhooks import record_crashed

    delivery_id, request = claimed_request()
    record_crashed(request, RuntimeError("a bug"))
    delivery = WebhookDelivery.get_by_id(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.lease_token) == (PENDING, 1, None)
    assert delivery.last_error == "recording the answer failed: RuntimeError('a bug')"
    assert delivery.next_attempt_at > utcnow(), "not due again at once"


def test_a_request_that_did_not_leave_spends_no_attempt_and_is_due_again_shortly(db):
    """The pace in Redis could not log the request (Redis away): it did not leave, so no attempt is counted."""
    from actors.webhooks import NOT_SENT_SECONDS, NotSent, record

    delivery_id, request = claimed_request()
    record(request, NotSent("Redis away"))
    delivery = WebhookDelivery.get_by_id(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.lease_token) == (PENDING, 0, None)
    assert 0 < (delivery.next_attempt_at - utcnow()).total_seconds() <= NOT_SENT_SECONDS


def test_a_receiver_that_asked_for_longer_than_the_schedule_gets_its_wait(db):
    subscription = subscribe(events.FAILED)
    delivery_id = fail_one(subscription.id)
    token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
    assert deliveries.failed(claimed, token, 429, "HTTP 429", SCHEDULE, at_least=120) == {"retry": 1}
    wait = (WebhookDelivery.get_by_id(delivery_id).next_attempt_at - utcnow()).total_seconds()
    assert 119 < wait <= 120, "the receiver's Retry-After, not the schedule's 5 s"


def test_a_delivery_out_of_attempts_is_a_dead_letter_and_is_replayed_from_its_first(db):
    subscription = subscribe(events.FAILED)
    delivery_id = fail_one(subscription.id)
    for attempt in range(len(SCHEDULE) + 1):
        WebhookDelivery.update(next_attempt_at=utcnow()).execute()
        token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
        outcome = deliveries.failed(claimed, token, None, "ConnectError: refused", SCHEDULE)
        assert outcome == ({"dead": 1} if attempt == len(SCHEDULE) else {"retry": 1})
    dead = deliveries.listing(FAILED)
    assert [(d.id, d.attempts, d.last_error) for d in dead] == [(delivery_id, 3, "ConnectError: refused")]
    assert deliveries.replay([delivery_id]) == 1
    delivery = WebhookDelivery.get_by_id(delivery_id)
    assert (delivery.status, delivery.attempts) == (PENDING, 0)
    token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
    assert claimed == [delivery_id] and deliveries.delivered(claimed, token, 204) == 1
    assert deliveries.counts() == {DELIVERED: 1}


def test_gone_disables_the_subscription_until_it_is_enabled(db):
    subscription = subscribe(events.FAILED)
    fail_one(subscription.id)
    token, claimed = deliveries.claim(subscription.id, 10, lease_seconds=60)
    deliveries.gone(subscription.id, claimed, token, "410 Gone")
    assert not subscriptions.get(subscription.id).enabled
    assert deliveries.counts() == {FAILED: 1}
    add("b")
    claims.fail_open(["b"], "boom")
    assert deliveries.counts() == {FAILED: 1}, "a disabled subscription is sent no new events"
    assert subscriptions.enable(subscription.id) and subscriptions.get(subscription.id).enabled
    assert deliveries.replay(subscription_id=subscription.id) == 1
    assert len(deliveries.claim(subscription.id, 10, lease_seconds=60)[1]) == 1


def test_removing_a_subscription_removes_its_deliveries(db):
    subscription = subscribe(events.FAILED)
    fail_one(subscription.id)
    assert subscriptions.remove(subscription.id) and not subscriptions.remove(subscription.id)
    assert WebhookDelivery.select().count() == 0


def test_a_rotated_secret_signs_beside_the_old_one_for_the_overlap(db):
    subscription = subscribe(events.FAILED)
    old = subscription.secret
    new = signing.new_secret()
    assert subscriptions.rotate(subscription.id, new, timedelta(hours=1))
    rotated = subscriptions.get(subscription.id)
    now = utcnow()
    assert subscriptions.signing_secrets(rotated, now) == [new, old]
    assert subscriptions.signing_secrets(rotated, now + timedelta(hours=2)) == [new]
    body = events.event(events.FAILED, "msg_1", now, {"conversation_id": "a"})
    headers = signing.headers(subscriptions.signing_secrets(rotated, now), "msg_1", int(now.timestamp()), body)
    for secret in (old, new):  # a receiver holding either secret verifies the request
        assert Webhook(secret).verify(body, headers)["data"]["conversation_id"] == "a"
    assert not subscriptions.rotate("wh_none", new, timedelta(hours=1))


def test_pending_deliveries_survive_an_outbox_read_by_another_subscription(db):
    """Claims are per subscription: one subscription's backlog does not hold another's events."""
    busy, quiet = subscribe(events.FAILED, batch_size=5), subscribe(events.FAILED)
    for conversation_id in ("a", "b", "c"):
        add(conversation_id)
    claims.fail_open(["a", "b", "c"], "boom")
    assert len(deliveries.claim(busy.id, 2, lease_seconds=60)[1]) == 2
    assert len(deliveries.claim(quiet.id, 10, lease_seconds=60)[1]) == 3
    assert outbox.record(events.FAILED, [], utcnow()) == 0


def test_the_readmes_verification_snippet_verifies_and_de_duplicates():
    """The few lines the README gives receivers, run as written against requests signed here."""
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("```python\nfrom standardwebhooks")[1].split("```")[0]
    secret, handled, seen = signing.new_secret(), [], set()

    def seen_before(event_id: str) -> bool:
        return event_id in seen or seen.add(event_id)

    namespace = {"SECRET": secret, "seen_before": seen_before, "handle": handled.append}
    exec("from standardwebhooks" + snippet, namespace)  # noqa: S102 - the README's own code
    now = utcnow()
    one = events.event(events.FAILED, "msg_1", now, {"conversation_id": "a"})
    batch = events.request_body([one, events.event(events.FAILED, "msg_2", now, {"conversation_id": "b"})], now)
    for body, message_id in ((one, "msg_1"), (batch, events.request_id(["msg_1", "msg_2"]))):
        headers = signing.headers([secret], message_id, int(time.time()), body)
        assert namespace["receive"](body.encode(), headers) == 204
        assert namespace["receive"]((body + " ").encode(), headers) == 400, "a body changed in transit"
    assert [event["data"]["event_id"] for event in handled] == ["msg_1", "msg_2"], "msg_1 handled once"
