"""The operations view: conversations by status and failure reason in keyset pages, and one conversation
with its messages, against real web and worker processes with Grok played by the emulator."""

from __future__ import annotations

from datetime import datetime

import pytest
from support.traffic import FAST_RETRIES, conversation

from store import queries, reports
from store.models import Conversation

LIST = "/api/v1/conversations"


@pytest.fixture
def settled(make_stack, grok, database_env):
    """Two completed conversations, one refused for its content, one poisoned (its answers always
    truncated) and one that happened in 2025, all settled."""
    stack = make_stack(BATCH_SIZE=1, MAX_RETRIES=2, **FAST_RETRIES, **grok.env, **database_env)
    client = stack.start_web()
    stack.start_worker()
    bodies = {
        "fine-1": conversation("Thanks, all good"),
        "refused": conversation("REFUSE this one please"),
        "poisoned": conversation("POISON overflows every answer"),
        "fine-2": conversation("Great service, 50% off_sale"),
        "old": {
            "messages": [{"role": "customer", "content": "Back in 2025", "timestamp": "2025-06-01T08:00:00Z"}],
            "metadata": {"channel": "email", "tier": {"name": "gold"}},
        },
    }
    for conversation_id, body in bodies.items():
        assert (
            client.post("/api/v1/conversations", json={**body, "conversation_id": conversation_id}).status_code == 202
        )
    stack.settled(client, list(bodies))
    return client, bodies


def ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [c["conversation_id"] for c in answer.json()["conversations"]]


def test_conversations_by_status_and_reason(settled):
    client, _bodies = settled
    assert sorted(ids(client.get(LIST, params={"status": "failed"}))) == ["poisoned", "refused"]
    assert ids(client.get(LIST, params={"status": "failed", "reason": "TRUNCATED"})) == ["poisoned"], "any case"
    assert ids(client.get(LIST, params={"reason": "usage guidelines"})) == ["refused"]
    assert ids(client.get(LIST, params={"reason": "%"})) == [], "a wildcard is a character like any other"
    assert sorted(ids(client.get(LIST, params={"status": "completed"}))) == ["fine-1", "fine-2", "old"]
    window = {"start_time": "2025-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}
    assert ids(client.get(LIST, params=window)) == ["old"], "windows are on the time it occurred"
    failed = client.get(LIST, params={"status": "failed", "reason": "truncated"}).json()["conversations"][0]
    assert failed["status"] == "failed" and "truncated" in failed["last_error"] and failed["attempts"] == 2


def test_keyset_pages_walk_every_conversation_once_oldest_first(settled):
    client, bodies = settled
    seen, cursor = [], None
    while True:
        page = client.get(LIST, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        assert page["returned_count"] == len(page["conversations"]) <= 2
        seen += [c["conversation_id"] for c in page["conversations"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(seen) == sorted(bodies) and seen[0] == "old"


def test_one_conversation_with_its_messages_and_metadata(settled):
    client, bodies = settled
    plain = client.get(f"{LIST}/old").json()
    assert plain["payload"] is None and plain["occurred_at"] == "2025-06-01T08:00:00Z"
    full = client.get(f"{LIST}/old", params={"include": "payload"}).json()
    assert full["payload"]["metadata"] == bodies["old"]["metadata"]
    assert full["payload"]["messages"] == [
        {"role": "customer", "content": "Back in 2025", "timestamp": "2025-06-01T08:00:00Z"}
    ]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "lost"}, "status"),
        ({"reason": "x" * 201}, "reason"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "bm9wZQ"}, "cursor"),
        ({"start_time": "2026-02-01", "end_time": "2026-01-01"}, "end_time"),
        ({"colour": "red"}, "colour"),
        ({"start_time": ""}, "start_time"),
        ({"end_time": ""}, "end_time"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(make_stack, params, parameter):
    client = make_stack().start_web()
    answer = client.get(LIST, params=params)
    assert answer.status_code == 400 and answer.json()["error"]["parameter"] == parameter, answer.text
    include = client.get(f"{LIST}/anything", params={"include": "everything"})
    assert include.status_code == 400 and include.json()["error"]["parameter"] == "include"


@pytest.mark.parametrize(
    "reason", ["r\u00e9sum\u00e9", "R\u00c9SUM\u00c9", "\u00dcBER", "\u03a3\u03c6\u03ac\u03bb\u03bc\u03b1"]
)
def test_a_reason_matches_in_any_case_beyond_ascii_on_both_databases(db, reason):
    """SQLite's LIKE folds only ASCII; PostgreSQL's ILIKE folds every letter: the answer must not depend on it."""
    errors = {
        "accented": "the R\u00e9sum\u00e9 was refused",
        "umlaut": "\u00fcber limit",
        "greek": "\u03c3\u03c6\u03ac\u03bb\u03bc\u03b1 7",
        "plain": "nothing in common",
    }
    queries.insert_conversations([queries.NewConversation.of(i, "{}", queries.utcnow()) for i in errors])
    for conversation_id, error in errors.items():
        Conversation.update(last_error=error).where(Conversation.id == conversation_id).execute()
    expected = {
        "r\u00e9sum\u00e9": ["accented"],
        "R\u00c9SUM\u00c9": ["accented"],
        "\u00dcBER": ["umlaut"],
        "\u03a3\u03c6\u03ac\u03bb\u03bc\u03b1": ["greek"],
    }[reason]
    page, _next = reports.list_conversations(reports.ConversationQuery(datetime.min, datetime.max, 10, reason=reason))
    assert [c.id for c in page] == expected
