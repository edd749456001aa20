"""GET /openapi.json: generated from the validating models, and the real answers match it."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator
from support import wait_until
from support.openapi import assert_matches
from support.traffic import conversation


@pytest.fixture(scope="module")
def web(make_module_stack):
    stack = make_module_stack(INBOUND_RPS=100_000, MAX_MESSAGES=7, MAX_PAGE_SIZE=50, WEBHOOK_ALLOW_HOSTS="localhost")
    stack.start_worker()
    return stack.start_web()


@pytest.fixture(scope="module")
def document(web) -> dict:
    response = web.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_it_is_openapi_3_1_with_every_route(document):
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/api/v1/conversations",
        "/api/v1/conversations/batch",
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/insights",
        "/api/v1/insights/summary",
        "/api/v1/insights/trends",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{subscription_id}",
        "/api/v1/webhooks/{subscription_id}/rotate",
        "/healthz",
        "/readyz",
        "/openapi.json",
    }
    assert set(document["webhooks"]) == {
        "conversation.completed",
        "conversation.failed",
        "provider_batch.ended",
        "batch",
    }
    Draft202012Validator.check_schema({"components": document["components"]})


def test_the_limits_it_documents_are_the_configured_ones(web, document):
    messages = document["components"]["schemas"]["Conversation"]["properties"]["messages"]
    assert messages["maxItems"] == 7
    limit = next(p for p in document["paths"]["/api/v1/insights"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 50
    too_many = {"messages": [{"role": "user", "content": "hi"}] * 8}
    assert web.post("/api/v1/conversations", json=too_many).status_code == 422


def test_real_answers_match_the_document(web, document):
    accepted = web.post("/api/v1/conversations", json=conversation("Thanks, lovely service!"))
    assert_matches(document, "Accepted", accepted.json())
    conversation_id = accepted.json()["conversation_id"]
    invalid = web.post("/api/v1/conversations", json={"messages": []})
    assert_matches(document, "Error", invalid.json())

    def completed():
        return (body := web.get(f"/api/v1/conversations/{conversation_id}").json())["status"] == "completed" and body

    status = wait_until(completed, timeout=30, message="the conversation to complete")
    assert_matches(document, "ConversationStatus", status)
    sent = web.get(f"/api/v1/conversations/{conversation_id}", params={"include": "sent"}).json()
    assert_matches(document, "ConversationStatus", sent)
    assert sent["sent"]["messages"] == [{"role": "customer", "content": "Thanks, lovely service!"}]
    parameters = document["paths"]["/api/v1/conversations/{conversation_id}"]["get"]["parameters"]
    include = next(p for p in parameters if p["name"] == "include")
    assert include["schema"]["enum"] == ["payload", "sent"]
    window = {"start_time": "2020-01-01", "end_time": "2100-01-01"}
    assert_matches(document, "InsightsPage", web.get("/api/v1/insights", params=window).json())
    assert_matches(document, "Summary", web.get("/api/v1/insights/summary", params=window).json())
    days = {"start_time": "2020-01-01", "end_time": "2021-06-01"}
    assert_matches(document, "Trends", web.get("/api/v1/insights/trends", params=days).json())
    assert_matches(
        document,
        "Trends",
        web.get("/api/v1/insights/trends", params={**days, "cluster": "billing", "end_time": "2020-01-02"}).json(),
    )
    batch = web.post("/api/v1/conversations/batch", json={"conversations": [conversation("a"), {"messages": 1}]})
    assert_matches(document, "BatchResults", batch.json())
    assert_matches(document, "Health", web.get("/healthz").json())
    assert_matches(document, "Ready", web.get("/readyz").json())


def test_the_webhook_answers_match_the_document(web, document):
    made = web.post("/api/v1/webhooks", json={"url": "http://localhost:9/in", "events": ["conversation.failed"]})
    assert made.status_code == 201 and made.headers["location"] == f"/api/v1/webhooks/{made.json()['id']}"
    assert_matches(document, "SubscriptionCreated", made.json())
    subscription_id = made.json()["id"]
    assert_matches(document, "Subscriptions", web.get("/api/v1/webhooks").json())
    assert_matches(document, "Subscription", web.get(f"/api/v1/webhooks/{subscription_id}").json())
    rotated = web.post(f"/api/v1/webhooks/{subscription_id}/rotate")
    assert_matches(document, "Rotated", rotated.json())
    assert rotated.json()["secret"] != made.json()["secret"]
    assert web.delete(f"/api/v1/webhooks/{subscription_id}").status_code == 204
    gone = web.delete(f"/api/v1/webhooks/{subscription_id}")
    assert gone.status_code == 404
    assert_matches(document, "Error", gone.json())
    too_big = web.post(
        "/api/v1/webhooks", json={"url": "http://localhost:9/in", "events": ["conversation.failed"], "batch_size": 101}
    )
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "validation_failed"
    assert "WEBHOOK_MAX_BATCH" in too_big.json()["error"]["fields"][0]["message"]
