"""The webhook receiver over HTTP (``testing/receiver.py``): its state, and the ASGI application uvicorn serves.

A hook request waiting for its latency is a sleeping coroutine, not a thread, so a slow receiver costs the
process little; the statistics are counted as requests come, so ``GET /_receiver/stats`` is cheap during a
benchmark, and what each request costs is its JSON parsing and, with secrets set, one HMAC per secret.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from testing.asgi import Receive, Scope, Send, read_body, send_json

MODES = {"ok": 200, "down": 503, "gone": 410}
RECORDED_HEADERS = (b"webhook-id", b"webhook-timestamp", b"webhook-signature", b"content-type", b"user-agent")
SETTABLE = {"mode": str, "latency_ms": float, "fail_rate": float, "seed": int, "secrets": list}
FAULT_KEYS = {"status": int, "delay": float, "redirect": str, "big_body": int, "retry_after": str}
CHUNK = 65536  # bytes per message of a big body: it is streamed, never held whole
BAD_REQUEST = (KeyError, TypeError, ValueError, AttributeError)  # json.JSONDecodeError is a ValueError


@dataclass
class ReceiverConfig:
    """The receiver's settings: from the command line, changed by ``POST /_receiver/config``."""

    mode: str = "ok"
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    seed: int = 42
    secrets: list[str] = field(default_factory=list)
    record_limit: int = 100_000

    def changed(self, changes: dict[str, Any]) -> ReceiverConfig:
        """A copy with ``changes`` applied, each checked: ``ValueError`` names the first bad one, and the
        configuration in use is left whole."""
        new = replace(self, secrets=list(self.secrets))
        for name, value in changes.items():
            if name not in SETTABLE:
                raise ValueError(f"unknown setting {name!r}: one of {', '.join(SETTABLE)}")
            if not is_a(value, SETTABLE[name]):
                raise ValueError(f"{name} must be a {SETTABLE[name].__name__}")
            setattr(new, name, SETTABLE[name](value))
        if not all(isinstance(secret, str) for secret in new.secrets):
            raise ValueError("secrets must be strings")
        if new.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if new.latency_ms < 0 or not 0 <= new.fail_rate <= 1:
            raise ValueError("latency_ms must be at least 0, fail_rate between 0 and 1")
        return new


def is_a(value: Any, kind: type) -> bool:
    """Whether JSON ``value`` is of ``kind``: an integer is a float too, a boolean is no number."""
    return not isinstance(value, bool) and isinstance(value, (kind, int) if kind is float else kind)


def verifiers(secrets: list[str]) -> list[Any]:
    """A ``standardwebhooks`` verifier per secret; raises ``ValueError`` for a secret that is not one.

    Imported here, not at the top: ``standardwebhooks`` is a test extra, and every module of the package
    imports in an install without them (``tests/test_imports.py``, ``tests/test_image.py``)."""
    if not secrets:
        return []
    from standardwebhooks.webhooks import Webhook

    try:
        return [Webhook(secret) for secret in secrets]
    except Exception as error:  # binascii.Error (a ValueError), EmptyWebhookSecretError
        raise ValueError(f"not a webhook secret: {error}") from None


def checked_faults(body: Any) -> list[dict[str, Any]]:
    """``POST /_receiver/faults``'s list, each fault's keys known and of their types."""
    if not isinstance(body, list) or not all(isinstance(fault, dict) for fault in body):
        raise ValueError("faults must be a list of objects")
    for fault in body:
        for key, value in fault.items():
            if key not in FAULT_KEYS:
                raise ValueError(f"unknown fault {key!r}: one of {', '.join(FAULT_KEYS)}")
            if not is_a(value, FAULT_KEYS[key]):
                raise ValueError(f"fault {key!r} must be a {FAULT_KEYS[key].__name__}")
        if not 100 <= fault.get("status", 200) <= 599 or fault.get("big_body", 0) < 0 or fault.get("delay", 0) < 0:
            raise ValueError("a fault's status is 100 to 599, its big_body and delay at least 0")
    return body


def events_of(raw: bytes) -> list[Any] | None:
    """The events a body carries: ``data.events`` of a batch, else the body itself; ``None`` when the body
    is not a JSON object (or a batch without its list)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if body.get("type") != "batch":
        return [body]
    events = (body.get("data") or {}).get("events") if isinstance(body.get("data"), dict) else None
    return events if isinstance(events, list) else None


def event_id(event: Any) -> Any:
    data = event.get("data") if isinstance(event, dict) else None
    return data.get("event_id") if isinstance(data, dict) else None


class ReceiverState:
    """What the receiver holds, in memory only: its configuration, the faults queued, the latest requests
    recorded and counts of them all."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.verifiers = verifiers(config.secrets)
        self.faults: deque[dict[str, Any]] = deque()
        self.records: deque[dict[str, Any]] = deque(maxlen=config.record_limit or None)
        self.reset()

    def reset(self) -> None:
        """Forget the requests, their counts and the queued faults, and draw failures from the seed again."""
        self.records.clear()
        self.faults.clear()
        self.random = random.Random(self.config.seed)
        self.counts: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.accepted_ids: set[Any] = set()

    def configure(self, changes: dict[str, Any]) -> None:
        config = self.config.changed(changes)
        if "secrets" in changes:
            self.verifiers = verifiers(config.secrets)
        if "seed" in changes:
            self.random = random.Random(config.seed)
        self.config = config

    def answer(self, fault: dict[str, Any]) -> int:
        """The status a hook request gets: its fault's, else its mode's, else a failure drawn at ``fail_rate``."""
        if "status" in fault:
            return fault["status"]
        if "redirect" in fault:
            return 307
        if "big_body" in fault:
            return 200
        status = MODES[self.config.mode]
        if status == 200 and self.config.fail_rate and self.random.random() < self.config.fail_rate:
            return 500
        return status

    def verified(self, raw: bytes, headers: dict[str, str]) -> bool | None:
        """Whether a secret set verifies the request's signature (``None`` with no secret set)."""
        if not self.verifiers:
            return None
        for verifier in self.verifiers:
            try:
                verifier.verify(raw, headers, json_parse=False)
                return True
            except Exception:  # WebhookVerificationError: headers missing, too old, no signature matches
                continue
        return False

    def record(self, entry: dict[str, Any]) -> None:
        """Keep ``entry`` and count it; its events count as accepted when it was answered 2xx, in time."""
        self.records.append(entry)
        self.counts["requests"] += 1
        self.by_status[entry["status"]] += 1
        self.counts["unverified"] += entry["verified"] is False
        events = entry["events"] or []
        self.counts["events"] += len(events)
        if 200 <= entry["status"] < 300 and not entry.get("client_gone"):
            for event in events:
                self.counts["accepted_events"] += 1
                ident = event_id(event)
                if ident in self.accepted_ids:
                    self.counts["duplicates"] += 1
                elif ident is not None:
                    self.accepted_ids.add(ident)

    def stats(self) -> dict[str, Any]:
        names = ("requests", "events", "accepted_events", "duplicates", "unverified")
        return {
            **{name: self.counts[name] for name in names},
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
            "distinct_event_ids": len(self.accepted_ids),
            "faults_queued": len(self.faults),
        }


class ReceiverApp:
    """Routes each request: ``/_receiver/...`` to the control API, any other ``POST`` to the hook."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        raw = await read_body(receive)
        if path.startswith("/_receiver/"):
            await self.control(method, path.removeprefix("/_receiver/"), raw, send)
        elif method == "POST":
            await self.hook(scope, raw, receive, send)
        else:
            await send_json(send, 405, {"error": "a webhook is a POST"})

    async def control(self, method: str, action: str, raw: bytes, send: Send) -> None:
        state = self.state
        if method == "GET" and action == "received":
            snapshot = list(state.records)  # records are complete once kept: encoding them aside is safe
            return await send_json(send, 200, await asyncio.to_thread(lambda: json.dumps(snapshot).encode()))
        if method == "GET" and action == "stats":
            return await send_json(send, 200, state.stats())
        if method == "GET" and action == "config":
            return await send_json(send, 200, asdict(state.config))
        if method != "POST" or action not in {"config", "faults", "reset"}:
            return await send_json(send, 404, {"error": "not found"})
        try:
            body = json.loads(raw or b"null")
            if action == "config":
                if not isinstance(body, dict):
                    raise ValueError("the configuration's changes are a JSON object")
                state.configure(body)
                return await send_json(send, 200, asdict(state.config))
            if action == "faults":
                state.faults.extend(checked_faults(body))
                return await send_json(send, 200, {"queued": len(state.faults)})
        except BAD_REQUEST as error:
            return await send_json(send, 400, {"error": str(error)})
        state.reset()
        await send_json(send, 200, {})

    async def hook(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        """Answer a webhook as the mode and the next fault say, after the latency, and record it before the
        answer leaves: a sender that reads the records once answered finds its request there."""
        arrived, state = time.time(), self.state
        sent = dict(scope["headers"])
        headers = {name.decode(): sent[name].decode("latin-1") for name in RECORDED_HEADERS if name in sent}
        fault = state.faults.popleft() if state.faults else {}
        entry = {
            "t": arrived,
            "path": scope["path"],
            "status": state.answer(fault),
            "headers": headers,
            "body": raw.decode("utf-8", "replace"),
            "events": events_of(raw),
            "verified": state.verified(raw, headers),
            "fault": fault or None,
        }
        wait = state.config.latency_ms / 1000 + fault.get("delay", 0.0)
        if wait > 0:
            caller = asyncio.ensure_future(receive())  # ends early with "http.disconnect" when the sender hangs up
            await asyncio.sleep(wait)
            if caller.done():
                entry["client_gone"] = True  # the sender gave up (its timeout): its answer goes nowhere
            caller.cancel()
        state.record(entry)
        if entry.get("client_gone"):
            return
        if "big_body" in fault:
            return await stream(receive, send, fault["big_body"])
        headers = {"location": fault["redirect"]} if "redirect" in fault else {}
        if "retry_after" in fault:
            headers["retry-after"] = fault["retry_after"]
        await send_json(send, entry["status"], b"{}", headers)


async def stream(receive: Receive, send: Send, size: int) -> None:
    """``size`` bytes of JSON-looking padding, with no length announced (chunked), a chunk at a time, until the
    sender hangs up (uvicorn drops what is sent after that at once, so the loop yields and looks each time)."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    chunk, gone = b" " * CHUNK, asyncio.ensure_future(receive())
    for start in range(0, size, CHUNK):
        if gone.done():
            return
        await send({"type": "http.response.body", "body": chunk[: size - start], "more_body": True})
        await asyncio.sleep(0)
    gone.cancel()
    await send({"type": "http.response.body", "body": b""})
