"""The webhook receiver (``testing/receiver.py``) that the outgoing webhooks' tests and benchmarks deliver to:
over HTTPS from a throwaway authority, it verifies what is signed and nothing else, answers as its mode,
fail rate and faults say, and a stop then a start keeps its address and certificate."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from support import wait_until
from support.receiver import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_dGhlIG9sZCBzZWNyZXQsIHJvdGF0ZWQgb3V0"

pytestmark = pytest.mark.processes


def sender(receiver: Receiver, timeout: float = 10) -> httpx.Client:
    """A client that trusts the receiver's authority, as a worker told of its ``ca_file`` would."""
    return httpx.Client(verify=ssl.create_default_context(cafile=receiver.ca_file), timeout=timeout)


def event(event_id: str, kind: str = "insight.created") -> dict:
    return {"type": kind, "timestamp": "2026-12-07T10:00:00Z", "data": {"event_id": event_id}}


def signed(body: str, msg_id: str, *secrets: str) -> dict[str, str]:
    """The Standard Webhooks headers for ``body``, a signature per secret (several while one is rotated)."""
    now = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(Webhook(secret).sign(msg_id, now, body) for secret in secrets),
        "content-type": "application/json",
    }


def test_a_signed_webhook_is_verified_over_https_and_a_tampered_one_is_not(tmp_path: Path):
    receiver = Receiver(tmp_path, ["--secret", SECRET])
    try:
        single = json.dumps(event("e1"))
        batch = json.dumps({"type": "batch", "timestamp": "2026-12-07T10:00:01Z", "data": {"events": [event("e2")]}})
        with sender(receiver) as client:
            assert client.post(receiver.url, content=single, headers=signed(single, "m1", SECRET)).status_code == 200
            rotating = signed(batch, "m2", OLD_SECRET, SECRET)
            assert client.post(receiver.url, content=batch, headers=rotating).status_code == 200
            tampered = single.replace("e1", "e9")
            client.post(receiver.url, content=tampered, headers=signed(single, "m3", SECRET))
            client.post(receiver.url.replace("/hook", "/elsewhere"), content=single)  # unsigned
        records = receiver.received()
        assert [(r["path"], r["verified"], r["headers"].get("webhook-id")) for r in records] == [
            ("/hook", True, "m1"),
            ("/hook", True, "m2"),
            ("/hook", False, "m3"),
            ("/elsewhere", False, None),
        ]
        assert records[0]["body"] == single and records[0]["headers"]["content-type"] == "application/json"
        assert [e["data"]["event_id"] for e in receiver.events()] == ["e1", "e2", "e9", "e1"]
        stats = receiver.stats()
        counted = ("requests", "unverified", "distinct_event_ids", "duplicates")
        assert [stats[name] for name in counted] == [4, 2, 3, 1]

        receiver.configure(secrets=[OLD_SECRET])  # the subscriber rotated back: the current signature fails
        with sender(receiver) as client:
            client.post(receiver.url, content=single, headers=signed(single, "m4", SECRET))
        assert receiver.received()[-1]["verified"] is False
    finally:
        receiver.stop()


def test_modes_fail_rate_and_faults_shape_the_answers(receiver: Receiver):
    body = json.dumps(event("e1"))
    with sender(receiver) as client:
        post = lambda: client.post(receiver.url, content=body)  # noqa: E731
        receiver.configure(mode="down")
        assert post().status_code == 503
        receiver.configure(mode="gone")
        assert post().status_code == 410
        receiver.configure(mode="ok", fail_rate=0.5)
        statuses = [post().status_code for _ in range(40)]
        assert {200, 500} == set(statuses) and 8 < statuses.count(500) < 32, statuses
        receiver.configure(fail_rate=0)

        receiver.faults({"status": 502}, {"redirect": "https://example.com/"}, {"big_body": 5_000_000})
        assert post().status_code == 502
        moved = post()
        assert (moved.status_code, moved.headers["location"]) == (307, "https://example.com/")
        with client.stream("POST", receiver.url, content=body) as big:
            assert big.status_code == 200 and "content-length" not in big.headers
            assert len(next(big.iter_bytes())) > 0  # the sender reads a little and hangs up
        assert post().status_code == 200, "each fault is used once"

    receiver.faults({"delay": 2})
    with sender(receiver, timeout=0.5) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(receiver.url, content=body)
    late = wait_until(lambda: [r for r in receiver.received() if r["fault"] == {"delay": 2}], timeout=5)
    assert late[0]["client_gone"] is True, "recorded once its wait was over, the sender gone by then"

    for bad in ({"mode": "sideways"}, {"fail_rate": 2}, {"latency_ms": "slow"}, {"colour": 1}, {"secrets": ["!"]}):
        answer = receiver.control.post("/config", json=bad)
        assert answer.status_code == 400 and answer.json()["error"], bad
    assert receiver.control.post("/faults", json=[{"status": "soon"}]).status_code == 400
    stats = receiver.stats()
    assert stats["by_status"]["503"] == 1 and stats["by_status"]["410"] == 1 and stats["faults_queued"] == 0
    assert stats["accepted_events"] == statuses.count(200) + 2 and stats["duplicates"] == stats["accepted_events"] - 1
    receiver.reset()
    assert receiver.received() == [] and receiver.stats()["requests"] == 0


def test_stopped_then_started_it_keeps_its_address_and_certificate(receiver: Receiver):
    url, body = receiver.url, json.dumps(event("e1"))
    with sender(receiver) as client:
        assert client.post(url, content=body).status_code == 200
        receiver.stop()
        with pytest.raises(httpx.ConnectError):
            client.post(url, content=body)
        receiver.start()
        assert receiver.url == url
        assert client.post(url, content=body).status_code == 200
    assert len(receiver.received()) == 1, "a restarted receiver remembers nothing"
