"""The HTTP API against a real web process (SQLite, real Redis, no worker so queues can be inspected)."""

from __future__ import annotations

import json

import httpx
import pytest
from support.traffic import conversation

POST = "/api/v1/conversations"
JSON_HEADERS = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def stack(make_module_stack):
    stack = make_module_stack(INBOUND_RPS=100_000)
    stack.client = stack.start_web()
    return stack


@pytest.fixture
def client(stack) -> httpx.Client:
    return stack.client


def queued_messages(stack, queue: str = "collect") -> int:
    """Messages waiting in a Dramatiq queue of this stack's Redis."""
    return stack.redis.hlen(f"insights:{queue}.msgs")


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_accepts_a_conversation_and_commits_it_before_answering(stack, client):
    before = queued_messages(stack)
    response = client.post(POST, json=conversation("My order arrived broken."))
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"status", "conversation_id", "message"}
    assert body["status"] == "accepted"
    assert body["message"] == "Conversation queued for analysis"
    assert body["conversation_id"].startswith("conv_")
    assert response.headers["location"] == f"/api/v1/conversations/{body['conversation_id']}"
    assert queued_messages(stack) == before + 1

    status = client.get(response.headers["location"]).json()
    assert status["status"] == "queued"
    assert status["attempts"] == 0
    assert status["insight"] is None


def test_generated_ids_are_unique_and_sortable(client):
    ids = [client.post(POST, json=conversation(f"message {n}")).json()["conversation_id"] for n in range(5)]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


def test_same_id_same_payload_is_accepted_once(stack, client):
    body = conversation("Refund please", conversation_id="idem-1", metadata={"b": 1, "a": [1, 2]})
    first = client.post(POST, json=body)
    queued = queued_messages(stack)
    # Same payload with keys in another order and an equivalent timestamp spelling: still the same.
    again = client.post(POST, content=json.dumps(dict(reversed(list(body.items())))), headers=JSON_HEADERS)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert again.headers["location"] == "/api/v1/conversations/idem-1"
    assert queued_messages(stack) == queued, "a duplicate must not be enqueued again"


def test_nested_key_order_and_timestamp_spellings_do_not_change_the_payload(stack, client):
    """The canonical payload sorts keys at every depth and normalises timestamps: a client resending the
    same conversation, serialised by another library, gets the same 202 and enqueues nothing."""

    def body(metadata: dict, timestamps: tuple[str, str]) -> dict:
        return {
            "conversation_id": "idem-nested",
            "metadata": metadata,
            "messages": [
                {"role": "customer", "content": "hi", "timestamp": timestamps[0]},
                {"content": "hello", "timestamp": timestamps[1], "role": "agent"},
            ],
        }

    first = body(
        {"ticket": {"priority": "high", "tags": ["a", "b"], "owner": {"team": "x", "id": 7}}, "channel": "chat"},
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:01.500000Z"),
    )
    assert client.post(POST, json=first).status_code == 202
    queued = queued_messages(stack)
    for spelling in [
        ("2026-01-01T10:00:00+00:00", "2026-01-01T10:00:01.5Z"),
        ("2026-01-01T11:00:00+01:00", "2026-01-01T10:00:01.500+00:00"),
        ("2026-01-01T10:00:00.000000Z", "2026-01-01T05:00:01.5-05:00"),
    ]:
        again = body(
            {"channel": "chat", "ticket": {"owner": {"id": 7, "team": "x"}, "tags": ["a", "b"], "priority": "high"}},
            spelling,
        )
        response = client.post(POST, json=again)
        assert response.status_code == 202, (spelling, response.text)
    assert queued_messages(stack) == queued, "a duplicate must not be enqueued again"
    reordered_list = body(
        {"channel": "chat", "ticket": {"owner": {"id": 7, "team": "x"}, "tags": ["b", "a"], "priority": "high"}},
        ("2026-01-01T10:00:00Z", "2026-01-01T10:00:01.5Z"),
    )
    assert client.post(POST, json=reordered_list).status_code == 409, "list order is content"


def test_same_id_different_payload_is_a_conflict(client):
    assert client.post(POST, json=conversation("one", conversation_id="idem-2")).status_code == 202
    error = assert_error(client.post(POST, json=conversation("two", conversation_id="idem-2")), 409, "conflict")
    assert error["conversation_id"] == "idem-2"


def test_equivalent_timestamps_are_the_same_payload(client):
    def body(timestamp: str) -> dict:
        return {"conversation_id": "idem-3", "messages": [{"role": "user", "content": "hi", "timestamp": timestamp}]}

    assert client.post(POST, json=body("2026-01-01T10:00:00Z")).status_code == 202
    assert client.post(POST, json=body("2026-01-01T11:00:00+01:00")).status_code == 202
    assert client.post(POST, json=body("2026-01-01T10:00:01Z")).status_code == 409


def test_wrong_content_type_is_415(client):
    response = client.post(POST, content=json.dumps(conversation()), headers={"content-type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")
    assert_error(client.post(POST, content=b"messages=1"), 415, "unsupported_media_type")


def test_json_with_charset_is_accepted(client):
    response = client.post(
        POST, content=json.dumps(conversation()), headers={"content-type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 202


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"messages": [}', b"", b"\xff\xfe"])
def test_unparseable_json_is_400(client, body):
    assert_error(client.post(POST, content=body, headers=JSON_HEADERS), 400, "invalid_json")


def test_body_over_the_limit_is_413_from_content_length(client):
    big = json.dumps(conversation("x" * 1_100_000))
    error = assert_error(client.post(POST, content=big, headers=JSON_HEADERS), 413, "payload_too_large")
    assert error["max_body_bytes"] == 1_048_576


def test_body_over_the_limit_is_413_while_streaming_without_content_length(client):
    def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(300):
            yield b"y" * 4096
        yield b'"}]}'

    response = client.post(POST, content=chunks(), headers=JSON_HEADERS)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def fields_of(response: httpx.Response) -> dict[str, str]:
    error = assert_error(response, 422, "validation_failed")
    return {field["path"]: field["message"] for field in error["fields"]}


@pytest.mark.parametrize(
    "body, path",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "u", "content": "hi"}] * 501}, "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "c" * 32_001}]}, "messages.0.content"),
        ({"messages": [{"role": "", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "r" * 33, "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": "hi", "timestamp": "yesterday"}]}, "messages.0.timestamp"),
        ({"messages": [{"role": "user", "content": "hi", "mood": "sad"}]}, "messages.0.mood"),
        ({"messages": "hello"}, "messages"),
        (conversation(metadata={"blob": "m" * 16_400}), "metadata"),
        (conversation(metadata=["not", "an", "object"]), "metadata"),
        (conversation(conversation_id="has spaces"), "conversation_id"),
        (conversation(conversation_id="-starts-with-dash"), "conversation_id"),
        (conversation(conversation_id="a" * 129), "conversation_id"),
        (conversation(conversation_id=42), "conversation_id"),
        (conversation(extra_field=1), "extra_field"),
        ([conversation()], "(body)"),
    ],
)
def test_schema_violations_are_422_naming_the_field(client, body, path):
    assert path in fields_of(client.post(POST, json=body))


def test_every_offending_field_is_listed(client):
    body = {"conversation_id": "bad id", "messages": [{"role": "", "content": ""}, {"role": "user", "content": 1}]}
    paths = set(fields_of(client.post(POST, json=body)))
    assert {"conversation_id", "messages.0.role", "messages.0.content", "messages.1.content"} <= paths


def test_messages_must_not_go_back_in_time(client):
    body = {
        "messages": [
            {"role": "user", "content": "second", "timestamp": "2026-01-01T10:00:00Z"},
            {"role": "agent", "content": "first?", "timestamp": "2026-01-01T09:00:00Z"},
        ]
    }
    messages = fields_of(client.post(POST, json=body))
    assert "messages.1.timestamp" in json.dumps(messages)


def test_limits_at_the_boundary_are_accepted(client):
    body = {
        "conversation_id": "A" + "b" * 127,
        "messages": [{"role": "r" * 32, "content": "c" * 32_000}] + [{"role": "user", "content": "ok"}] * 499,
        "metadata": {"k": "v" * 16_000},
    }
    assert client.post(POST, json=body).status_code == 202


def test_unknown_conversation_is_404(client):
    assert_error(client.get("/api/v1/conversations/nope"), 404, "not_found")


def test_unknown_route_and_wrong_method_are_json(client):
    assert_error(client.get("/api/v2/whatever"), 404, "not_found")
    assert_error(client.delete(POST), 405, "method_not_allowed")
    assert_error(client.put("/healthz"), 405, "method_not_allowed")


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "checks": {"redis": "ok", "database": "ok"},
        "grok": {"state": "available", "reason": None, "seconds_left": 0.0},
    }


INSIGHTS = "/api/v1/insights"
WINDOW = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-02-01T00:00:00Z"}


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"end_time": "2026-02-01T00:00:00Z"}, "start_time"),
        ({"start_time": "2026-01-01T00:00:00Z"}, "end_time"),
        ({**WINDOW, "start_time": "last tuesday"}, "start_time"),
        ({**WINDOW, "end_time": "2026-13-01"}, "end_time"),
        ({**WINDOW, "start_time": "0001-01-01T00:00:00+05:00"}, "start_time"),
        ({**WINDOW, "end_time": WINDOW["start_time"]}, "end_time"),
        ({"start_time": "2026-02-01T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, "end_time"),
        ({**WINDOW, "limit": "0"}, "limit"),
        ({**WINDOW, "limit": "1001"}, "limit"),
        ({**WINDOW, "limit": "ten"}, "limit"),
        ({**WINDOW, "limit": "1.5"}, "limit"),
        ({**WINDOW, "min_confidence": "1.01"}, "min_confidence"),
        ({**WINDOW, "min_confidence": "-0.1"}, "min_confidence"),
        ({**WINDOW, "min_confidence": "nan"}, "min_confidence"),
        ({**WINDOW, "min_confidence": "high"}, "min_confidence"),
        ({**WINDOW, "sentiment": "happy"}, "sentiment"),
        ({**WINDOW, "cursor": "%%%"}, "cursor"),
        ({**WINDOW, "cursor": "eyJhIjogMX0="}, "cursor"),
        ({**WINDOW, "colour": "blue"}, "colour"),
    ],
)
def test_bad_insights_parameters_are_400_naming_the_parameter(client, params, parameter):
    error = assert_error(client.get(INSIGHTS, params=params), 400, "invalid_parameter")
    assert error["parameter"] == parameter
    assert error["message"].startswith(parameter)


def test_repeated_parameter_is_400(client):
    response = client.get(INSIGHTS + "?start_time=2026-01-01&start_time=2026-01-02&end_time=2026-03-01")
    assert assert_error(response, 400, "invalid_parameter")["parameter"] == "start_time"


def test_an_empty_window_answers_an_empty_page(client):
    response = client.get(INSIGHTS, params={**WINDOW, "limit": "1000", "min_confidence": "0", "sentiment": "neutral"})
    assert response.status_code == 200
    assert response.json() == {
        "insights": [],
        "metadata": {
            "total_count": 0,
            "returned_count": 0,
            "time_window": {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-02-01T00:00:00Z"},
            "next_cursor": None,
        },
    }


@pytest.mark.parametrize(
    "start, end",
    [
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"),  # whole days from the first to the last
        ("9999-12-31T00:00:01Z", "9999-12-31T23:59:59Z"),  # no midnight after the start
        ("0001-01-01T00:00:01Z", "0001-01-02T00:00:01Z"),
    ],
)
def test_windows_at_the_ends_of_the_calendar_are_counted(client, start, end):
    for extra in ({}, {"sentiment": "neutral", "min_confidence": "0.33"}):
        response = client.get(INSIGHTS, params={"start_time": start, "end_time": end, **extra})
        assert response.status_code == 200, response.text
        assert response.json()["metadata"]["total_count"] == 0


def test_times_without_offset_are_utc(client):
    response = client.get(
        INSIGHTS, params={"start_time": "2026-01-01T00:00:00", "end_time": "2026-01-01T05:00:00+02:00"}
    )
    assert response.json()["metadata"]["time_window"] == {
        "start_time": "2026-01-01T00:00:00Z",
        "end_time": "2026-01-01T03:00:00Z",
    }
