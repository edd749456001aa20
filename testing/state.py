"""The xAI emulator's state (settings, queued faults, the log, the limits' windows, the batches) and what
it answers to one chat-completions call (``respond``); ``testing/emulator.py`` documents the behaviour.

Chat calls and the control API run on the server's event loop, one at a time, so their state needs no
lock: a call is checked, charged and answered (its reply encoded) before the loop turns to another, and
then only waits. The Batch API runs in threads, behind the locks of ``BatchStore`` and ``RowCache``.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from settings import load_settings
from testing.answers import (
    POISON,
    REFUSE,
    analyze,
    asks_for_taxonomy,
    bend,
    completion,
    content_of,
    content_refused,
    credits_refusal,
    holds,
    prompt_too_long,
    unknown_model,
    xai_error,
)
from testing.batches import BatchStore
from testing.config import EmulatorConfig
from testing.prompt_cache import PrefixCache
from testing.rate_limits import Limits
from testing.rows import RowCache
from testing.schema import SchemaBook

RANDOM_FAULTS = ({"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 503}, {"malformed": True})


@dataclass
class Reply:
    """An answer, encoded at once: thousands wait at a time, as bytes rather than trees of dicts."""

    status: int
    body: Any  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    wait: float = 0.0  # seconds before answering
    hang_up: bool = False  # promise the whole body, send half, close

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes):
            self.body = json.dumps(self.body).encode()


RECEIVED_LIMIT = 1000  # request bodies kept for GET /_emulator/received


class EmulatorState:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults: deque[dict[str, Any]] = deque()
        self.log: deque[dict[str, Any]] = deque(maxlen=config.log_limit or None)
        self.limits = Limits()
        self.rows = RowCache(
            OfflineAnalyzer(Taxonomy(dict(load_settings({}).taxonomy), closed=True))
        )  # answers as_asked
        self.batches = BatchStore(self.rows, config)  # read at every call: POST /_emulator/config changes it
        self.schemas = SchemaBook()
        self.received: deque[bytes] = deque(maxlen=RECEIVED_LIMIT)  # bodies of chat calls and Batch API adds
        self.reseed()

    def reseed(self) -> None:
        """Faults and latencies draw from generators of their own, so that neither shifts the other."""
        self.fault_random = random.Random(self.config.seed)
        self.latency_random = random.Random(self.config.seed + 1)
        self.prefixes = PrefixCache(self.config.seed)

    def configure(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)
        if "seed" in changes:
            self.reseed()
        if self.log.maxlen != (self.config.log_limit or None):
            self.log = deque(self.log, maxlen=self.config.log_limit or None)

    def next_fault(self) -> dict[str, Any]:
        if self.faults:
            return self.faults.popleft()
        if self.fault_random.random() < self.config.fault_rate:
            return dict(self.fault_random.choice(RANDOM_FAULTS))
        return {}

    def draw_latency(self) -> float:
        config = self.config
        latency = config.latency
        if config.latency_median > 0:
            latency += self.latency_random.lognormvariate(math.log(config.latency_median), config.latency_sigma)
        return min(latency, config.latency_max) if config.latency_max > 0 else latency

    def reset(self) -> None:
        self.faults.clear()
        self.log.clear()
        self.limits.reset()
        self.batches.clear()
        self.schemas.clear()
        self.received.clear()
        self.prefixes = PrefixCache(self.config.seed)


def refuse(
    entry: dict[str, Any], reason: str, status: int, message: str, headers: dict[str, str] | None = None
) -> Reply:
    entry["refused"] = reason
    return Reply(status, xai_error(status, message), headers or {})


def respond(
    state: EmulatorState, key: str, body: dict[str, Any], entry: dict[str, Any], conv_id: str | None = None
) -> Reply:
    """What Grok would answer to this call (``conv_id``: its ``x-grok-conv-id``), and how long it would think
    first; fills in the log ``entry``."""
    config = state.config
    if key != config.api_key:
        return Reply(401, {"error": f"Incorrect API key provided: {key}. Obtain one from the console."})
    if config.credits:
        entry["refused"] = "credits"
        return Reply(config.credits_status, credits_refusal(config.credits, config.credits_status))
    model = body.get("model", "?")
    if config.models and model not in config.models:
        return refuse(entry, "model", 404, unknown_model(model))
    if unsupported := state.schemas.check(body.get("response_format")):
        return refuse(
            entry, "schema", 400, f"Invalid response_format: unsupported JSON schema keywords: {', '.join(unsupported)}"
        )
    batch = json.loads(body["messages"][-1]["content"])["conversations"]
    entry["ids"] = [c["conversation_id"] for c in batch]
    prompt_tokens = entry["tokens"] = sum(len(m["content"]) for m in body["messages"]) // 4
    if prompt_tokens > config.context:
        return refuse(entry, "context", 400, prompt_too_long(config.context, prompt_tokens))
    if holds(batch, REFUSE):
        return refuse(entry, "content", config.refusal_status, content_refused(model))
    rows = analyze(state.rows, batch, asks_for_taxonomy(body))
    entry["tokens"] = prompt_tokens + len(json.dumps({"results": rows})) // 4
    refusal = state.limits.admit(model, entry["t"], entry["tokens"], config.rps, config.tpm, config.tpm_window)
    if refusal:
        return refuse(entry, refusal.kind, 429, refusal.message(model), refusal.headers())
    entry["conv_id"], entry["server"] = conv_id, state.prefixes.route(conv_id, config.cache_servers)
    cached_tokens = entry["cached"] = state.prefixes.serve(entry["server"], model, body["messages"], config.cache_span)
    fault = state.next_fault()
    entry["fault"] = fault or None
    entry["latency"] = state.draw_latency()
    wait = entry["latency"] + fault.get("delay", 0)
    status = fault.get("status", 200)
    if status != 200:
        headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
        error = fault["body"].encode("utf-8", "surrogatepass") if "body" in fault else {"error": f"emulated {status}"}
        return Reply(status, error, headers, wait)
    content, finish_reason = content_of(bend(rows, fault), fault, bool(holds(batch, POISON)))
    answer = completion(content, finish_reason, body, prompt_tokens, cached_tokens)
    entry["model"], entry["ticks"] = answer["model"], answer["usage"]["cost_in_usd_ticks"]
    return Reply(200, answer, wait=wait, hang_up=bool(fault.get("hangup")))
