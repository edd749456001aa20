"""Idempotency-Key on both POST endpoints, and the RateLimit fields a client paces itself by: a real web
process on real Redis and a real database (both databases: the keys live in the database)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from support.traffic import conversation

POST, BATCH = "/api/v1/conversations", "/api/v1/conversations/batch"


@pytest.fixture
def stack(make_stack, database_env):
    return make_stack(INBOUND_RPS=1000, **database_env)


def keyed(client, path: str, body: dict, key: str):
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_a_retried_post_names_the_same_conversation_and_another_body_is_a_conflict(stack):
    client = stack.start_web()
    first = keyed(client, POST, conversation("My invoice is wrong"), "retry-4711")
    assert first.status_code == 202 and first.json()["conversation_id"].startswith("idem_")
    stack.redis.flushdb()  # the key lives with the conversation, not in Redis
    again = keyed(client, POST, conversation("My invoice is wrong"), "retry-4711")
    assert again.status_code == 202 and again.json() == first.json()
    assert stack.redis.hlen("insights:collect.msgs") == 0, "the repeat enqueues nothing"
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(1,)]

    other = keyed(client, POST, conversation("Something else entirely"), "retry-4711")
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert keyed(client, POST, conversation("My invoice is wrong"), "another-key").json() != first.json()
    plain = [client.post(POST, json=conversation("My invoice is wrong")).json() for _ in range(2)]
    assert plain[0] != plain[1], "without a key, each POST is a new conversation (as before)"
    with_id = keyed(client, POST, conversation("Named", conversation_id="ticket-1"), "retry-4711")
    assert with_id.status_code == 202 and with_id.json()["conversation_id"] == "ticket-1", "a body's own id wins"


def test_a_key_is_forgotten_after_24_hours(stack):
    client = stack.start_web()
    first = keyed(client, POST, conversation("Day one"), "daily-key")
    stack.sql("UPDATE idempotency_keys SET created_at = ?", "2000-01-01 00:00:00")
    reused = keyed(client, POST, conversation("A day later, another conversation"), "daily-key")
    assert reused.status_code == 202 and reused.json()["conversation_id"] != first.json()["conversation_id"]


def test_a_retried_batch_names_the_same_conversations(stack):
    client = stack.start_web()
    body = {
        "conversations": [
            conversation("one"),
            {"messages": []},
            conversation("two", conversation_id="mine-2"),
            conversation("three"),
        ]
    }
    first = keyed(client, BATCH, body, "batch-7")
    assert first.status_code == 200
    statuses = [(r["status"], r.get("conversation_id")) for r in first.json()["results"]]
    assert [s for s, _ in statuses] == ["accepted", "invalid", "accepted", "accepted"]
    assert statuses[2][1] == "mine-2" and statuses[0][1].startswith("idem_") and statuses[0][1] != statuses[3][1]

    again = keyed(client, BATCH, body, "batch-7").json()["results"]
    assert [(r["status"], r.get("conversation_id")) for r in again] == [
        ("duplicate", statuses[0][1]),
        ("invalid", None),
        ("duplicate", "mine-2"),
        ("duplicate", statuses[3][1]),
    ]
    grown = keyed(client, BATCH, {"conversations": [*body["conversations"], conversation("four")]}, "batch-7")
    assert grown.status_code == 409 and grown.json()["error"]["code"] == "idempotency_key_reused", (
        "nothing of it accepted"
    )
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(3,)]
    single = keyed(client, POST, conversation("one"), "batch-7")
    assert single.status_code == 202, "keys are scoped to their endpoint"


def test_a_retried_batch_with_its_keys_in_another_order_is_the_same_batch(stack):
    client = stack.start_web()
    items = [{"metadata": {"b": 1, "a": {"y": 2, "x": 1}}, "messages": [{"content": "one", "role": "customer"}]}]
    reordered = [{"messages": [{"role": "customer", "content": "one"}], "metadata": {"a": {"x": 1, "y": 2}, "b": 1}}]
    first = keyed(client, BATCH, {"conversations": items}, "order-1").json()["results"]
    again = keyed(client, BATCH, {"conversations": reordered}, "order-1")
    assert again.status_code == 200, again.text
    assert again.json()["results"] == [{**first[0], "status": "duplicate"}]


def test_a_batch_whose_items_all_carry_ids_binds_no_key(stack):
    """As on the single POST, the body's own ids win: the key names nothing, so it is not spent."""
    client = stack.start_web()
    first = keyed(client, BATCH, {"conversations": [conversation("a", conversation_id="own-a")]}, "own-ids")
    other = keyed(client, BATCH, {"conversations": [conversation("b", conversation_id="own-b")]}, "own-ids")
    assert [r["status"] for r in (*first.json()["results"], *other.json()["results"])] == ["accepted", "accepted"], (
        other.text
    )
    assert stack.sql("SELECT COUNT(*) FROM idempotency_keys") == [(0,)]
    unnamed = keyed(client, BATCH, {"conversations": [conversation("c")]}, "own-ids")
    assert unnamed.json()["results"][0]["conversation_id"].startswith("idem_")


MALFORMED = ["", "has space", "x" * 256, "caf\u00e9"]


@pytest.mark.parametrize("key", MALFORMED)
def test_a_malformed_key_is_400_naming_the_header(stack, key):
    client = stack.start_web()
    for path, body in (
        (POST, conversation("hi")),
        (POST, conversation("hi", conversation_id="own")),
        (BATCH, {"conversations": [conversation("hi", conversation_id="own")]}),
    ):
        answer = client.post(path, json=body, headers={"Idempotency-Key": key.encode()})  # UTF-8 bytes as sent
        assert answer.status_code == 400 and answer.json()["error"] == {
            "code": "invalid_header",
            "message": "Idempotency-Key: 1 to 255 visible ASCII characters.",
            "header": "Idempotency-Key",
        }


def test_two_keys_on_one_request_are_400(stack):
    """A proxy or client library may join repeated headers; the service must not make one key of two."""
    client = stack.start_web()
    for path, body in ((POST, conversation("twice")), (BATCH, {"conversations": [conversation("twice")]})):
        answer = client.post(path, json=body, headers=[("Idempotency-Key", "first"), ("Idempotency-Key", "second")])
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_header", answer.text
        assert answer.json()["error"]["header"] == "Idempotency-Key"
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(0,)]


def test_a_request_refused_by_the_inbound_limit_writes_nothing(make_stack, database_env):
    stack = make_stack(INBOUND_RPS=1, **database_env)
    client = stack.start_web()
    statuses = []
    for n in range(20):
        answer = keyed(
            client,
            POST if n % 2 else BATCH,
            conversation(f"refused {n}") if n % 2 else {"conversations": [conversation(f"refused {n}")]},
            f"refused-{n}",
        )
        statuses.append(answer.status_code)
    assert 429 in statuses, statuses
    written = stack.sql("SELECT COUNT(*) FROM idempotency_keys")[0][0]
    assert written == len(statuses) - statuses.count(429) == stack.sql("SELECT COUNT(*) FROM conversations")[0][0]


def test_every_post_says_what_is_left_of_the_inbound_limit(make_stack):
    stack = make_stack(INBOUND_RPS=3)
    client = stack.start_web()
    answers = [client.post(POST, json=conversation(f"pace {n}", conversation_id=f"pace-{n}")) for n in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert {a.headers["RateLimit-Policy"] for a in answers} == {'"inbound";q=3;w=1'}
    remaining = [a.headers["RateLimit"].split(";")[1] for a in answers]
    assert remaining == ["r=2", "r=1", "r=0", "r=0"]
    assert answers[3].headers["Retry-After"] == "1" and answers[3].headers["RateLimit"].endswith("t=1")
    duplicate = client.post(POST, json=conversation("pace 0", conversation_id="pace-0"))
    assert duplicate.status_code == 202 and duplicate.headers["RateLimit"].startswith('"inbound";r='), (
        "a duplicate takes no slot, still says"
    )
    batch = client.post(BATCH, json={"conversations": [conversation("b", conversation_id="pace-b")]})
    assert batch.headers["RateLimit-Policy"] == '"inbound";q=3;w=1' and "RateLimit" in batch.headers


def test_concurrent_first_uses_of_a_key_name_one_conversation(stack):
    """Requests racing on an unused key each look it up as unused; the database keeps one first use, and
    every request answers with the ids derived from it."""
    clients = [stack.start_web(), stack.start_web()]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: keyed(clients[n % 2], POST, conversation("racing"), "race-1"), range(16)))
    assert {a.status_code for a in answers} == {202} and len({a.json()["conversation_id"] for a in answers}) == 1
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(1,)]
