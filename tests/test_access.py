"""API keys: hashed in configuration, scoped, checked on every protected route of a real web process."""

from __future__ import annotations

import http.client
import json
import os
import subprocess

import pytest
from support import ROOT
from support.cli import INSIGHTS
from support.traffic import conversation

from api.access import Verdict, authorize, hash_key, new_key

INGEST_KEY, INGEST_ENTRY = new_key(["ingest"])
READ_KEY, READ_ENTRY = new_key(["read"])
BOTH_KEY, BOTH_ENTRY = new_key(["ingest", "read"])


@pytest.fixture(scope="module")
def stack(make_module_stack):
    stack = make_module_stack(API_KEYS=";".join([INGEST_ENTRY, READ_ENTRY, BOTH_ENTRY]), INBOUND_RPS=10_000)
    stack.client = stack.start_web()
    return stack


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_configuration_holds_hashes_not_keys():
    assert INGEST_ENTRY == f"sha256:{hash_key(INGEST_KEY)}:ingest"
    assert INGEST_KEY not in INGEST_ENTRY
    configured = {hash_key(BOTH_KEY): frozenset({"ingest", "read"})}
    assert authorize(BOTH_KEY, "read", configured) is Verdict.ALLOWED
    assert authorize(BOTH_KEY + "x", "read", configured) is Verdict.UNAUTHORIZED
    assert authorize(None, "read", configured) is Verdict.UNAUTHORIZED


def test_posting_needs_the_ingest_scope(stack):
    client = stack.client
    missing = client.post("/api/v1/conversations", json=conversation())
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert client.post("/api/v1/conversations", json=conversation(), headers=bearer("ci_wrong")).status_code == 401
    forbidden = client.post("/api/v1/conversations", json=conversation(), headers=bearer(READ_KEY))
    assert forbidden.status_code == 403 and forbidden.json()["error"] == {
        "code": "forbidden",
        "message": "This API key lacks the 'ingest' scope.",
        "scope": "ingest",
    }
    assert client.post("/api/v1/conversations", json=conversation(), headers=bearer(INGEST_KEY)).status_code == 202
    assert (
        client.post("/api/v1/conversations", json=conversation("x"), headers={"X-API-Key": BOTH_KEY}).status_code == 202
    )
    batch = client.post(
        "/api/v1/conversations/batch", json={"conversations": [conversation()]}, headers=bearer(READ_KEY)
    )
    assert batch.status_code == 403
    keyless = client.post("/api/v1/conversations/batch", json={"conversations": [conversation("batch without key")]})
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "unauthorized"
    assert not stack.sql("SELECT id FROM conversations WHERE payload LIKE '%batch without key%'")


def test_reading_needs_the_read_scope(stack):
    client = stack.client
    window = {"start_time": "2020-01-01", "end_time": "2100-01-01"}
    for path in (
        "/api/v1/insights",
        "/api/v1/insights/summary",
        "/api/v1/conversations/whatever",
        "/api/v1/conversations",
    ):
        assert client.get(path, params=window).status_code == 401
        assert client.get(path, params=window, headers=bearer(INGEST_KEY)).status_code == 403
    assert client.get("/api/v1/insights", params=window, headers=bearer(READ_KEY)).status_code == 200
    assert client.get("/api/v1/conversations/whatever", headers=bearer(READ_KEY)).status_code == 404
    assert client.get("/api/v1/conversations", params={"status": "failed"}, headers=bearer(READ_KEY)).status_code == 200


def test_the_payload_needs_the_read_scope(stack):
    """``include=payload`` shows what customers wrote: an ingest key may send it, not read it back."""
    client = stack.client
    posted = client.post("/api/v1/conversations", json=conversation("private words"), headers=bearer(INGEST_KEY)).json()
    path = f"/api/v1/conversations/{posted['conversation_id']}"
    for key, status in ((INGEST_KEY, 403), ("ci_wrong", 401)):
        refused = client.get(path, params={"include": "payload"}, headers=bearer(key))
        assert refused.status_code == status and "private words" not in refused.text
    assert "private words" in client.get(path, params={"include": "payload"}, headers=bearer(READ_KEY)).text


def test_idempotency_keys_are_scoped_to_the_api_key(stack):
    """Two clients choosing the same Idempotency-Key name their own conversations, never each other's."""
    client = stack.client
    for path in ("/api/v1/conversations", "/api/v1/conversations/batch"):
        body = (
            conversation("shared key")
            if path.endswith("conversations")
            else {"conversations": [conversation("shared key")]}
        )
        answers = [
            client.post(path, json=body, headers={**bearer(key), "Idempotency-Key": "order-1"})
            for key in (INGEST_KEY, BOTH_KEY)
        ]
        assert [a.status_code for a in answers] == ([202, 202] if path.endswith("conversations") else [200, 200]), (
            answers[1].text
        )
        assert answers[0].json() != answers[1].json() and "accepted" in answers[1].text, (
            "the second is no duplicate of the first"
        )
        other = client.post(
            path,
            json={"conversations": [conversation("other")]} if path.endswith("batch") else conversation("other"),
            headers={**bearer(BOTH_KEY), "Idempotency-Key": "order-2"},
        )
        assert other.status_code in (200, 202)
        mine = client.post(path, json=body, headers={**bearer(INGEST_KEY), "Idempotency-Key": "order-2"})
        assert mine.status_code in (200, 202) and "idempotency_key_reused" not in mine.text, (
            "another client's key is not mine"
        )


PATH_SPELLINGS = (
    "//api/v1/{}",
    "/api//v1/{}",
    "/api/v1//{}",
    "/./api/v1/{}",
    "/api/v1/./{}",
    "/api/v1/{}/",
    "/%61pi/v1/{}",
    "/api/v1/x/../{}",
    "///api/v1/{}",
)


def raw_request(port: int, method: str, target: str, body: bytes | None = None) -> int:
    """Send ``target`` exactly as written (an HTTP client would normalise it) and return the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, target, body=body, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def test_no_spelling_of_a_path_skips_the_key(stack):
    """The key is checked on the resource that serves the request, whatever the path looks like."""
    port = stack.ports[0]
    window = "?start_time=2020-01-01&end_time=2100-01-01"
    before = stack.sql("SELECT COUNT(*) FROM conversations")[0][0]
    for spelling in PATH_SPELLINGS:
        for target in (spelling.format("insights") + window, spelling.format("insights/summary") + window):
            assert raw_request(port, "GET", target) in (401, 404), target
        body = json.dumps(conversation("sneaking in")).encode()
        assert raw_request(port, "POST", spelling.format("conversations"), body) in (401, 404), spelling
    assert stack.sql("SELECT COUNT(*) FROM conversations")[0][0] == before
    assert raw_request(port, "GET", "//healthz") in (200, 404)


def test_health_readiness_metrics_and_the_document_stay_open(stack):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert stack.client.get(path).status_code == 200, path
    document = stack.client.get("/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    post = document["paths"]["/api/v1/conversations"]["post"]
    assert post["security"] == [{"bearer": []}, {"apiKey": []}] and {"401", "403"} <= set(post["responses"])
    assert "security" not in document["paths"]["/healthz"]["get"]


def test_keys_are_never_logged(stack):
    stack.client.post("/api/v1/conversations", json=conversation(), headers=bearer(INGEST_KEY))
    assert INGEST_KEY not in stack.log_text() and READ_KEY not in stack.log_text()


def test_without_keys_the_service_says_it_is_open(make_stack):
    stack = make_stack()
    client = stack.start_web()
    assert client.post("/api/v1/conversations", json=conversation()).status_code == 202
    assert "NO API KEYS CONFIGURED" in stack.log_text()


@pytest.mark.processes
def test_the_cli_makes_keys():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    made = subprocess.run(
        [str(INSIGHTS), "apikey", "--scopes", "read"], env=env, capture_output=True, text=True, timeout=60
    )
    key = made.stdout.split("key (give it to the client; it is not stored anywhere): ")[1].split()[0]
    assert f"sha256:{hash_key(key)}:read" in made.stdout
    bad = subprocess.run(
        [str(INSIGHTS), "apikey", "--scopes", "root"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
