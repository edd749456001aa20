"""A local stand-in for xAI's chat-completions API: Grok's answers, latency, limits and refusals, faults on demand.

``python -m ops.grok_emulator --port 8500 --api-key KEY [options]`` serves ``POST /v1/chat/completions``
and the Batch API (``/v1/batches``, see ``ops/grok_batches.py``). It answers like Grok with structured
output: it reads the batch (the JSON document in the user message) and analyzes each conversation with
the offline analyzer (its rows cached by text, ``ops/grok_rows.py``).

Options, each also a key of ``POST /_emulator/config`` (``latency_median`` for ``--latency-median``...):

- ``--latency S`` (default 0) waits S seconds before each answer; ``--latency-median M --latency-sigma X``
  add a lognormal draw of median M and shape X (15 and 0.5: half the calls over 15 s, one in twenty over
  34 s), from a generator seeded with ``--seed`` (default 42) so that a run draws the same latencies again;
  ``--latency-max C`` caps the sum (0: no cap). A fault's ``delay`` comes on top. Latency does not grow with
  the size of the answer.
- ``--rps N`` (0: none): a call arriving when N calls were admitted in the second before it is refused.
- ``--tpm N`` (0: none) with ``--tpm-window S`` (default 60): a call is charged its prompt tokens (characters
  of the request's message contents / 4, as ``usage.prompt_tokens``) plus the completion tokens of its
  answer before any fault or truncation bends it; one that would take the tokens charged to calls arriving
  within S seconds over N is refused, at no charge. How, and what xAI documents: ``ops/grok_limits.py``.
- ``--context N`` (default 131072): a longer prompt is refused with ``400``.
- ``--models a,b`` (default: any): another model is ``404``.
- ``--refusal-status`` (403, or 400): the status of a content refusal (see ``ops/grok_answers.py`` for why
  403 is the default, and where each refusal's words come from).

A call is checked in this order: key (``401``), model (``404``), prompt length (``400``), content (``403``),
requests per second then tokens per minute (``429``); only an admitted call takes a queued fault and waits.
Refusals answer at once, in xAI's error shape ``{"code": ..., "error": <message>}``.

Control endpoints, for tests and benchmarks:

- ``POST /_emulator/faults`` with a JSON list: each fault is used by one coming admitted call, in order:
  ``{"status": 429, "retry_after": "2"}`` (``retry_after`` may be an HTTP date, or absent),
  ``{"status": 500}`` (any status), ``{"delay": 5}`` (answer late), ``{"malformed": true}``,
  ``{"truncate": true}`` (``finish_reason: length``), ``{"drop_rows": 1}``,
  ``{"extra_row": "some-id"}``, ``{"out_of_range": true}``, ``{"hangup": true}`` (hang up halfway
  through the answer's body), ``{"unstorable": true}`` (a NUL in the first row's reasoning and clusters, a
  lone surrogate in the last row's: valid JSON escapes, ``\\u0000`` and ``\\ud800``, that no database
  stores as they decode). An error status may carry ``"body"``: that text, sent as is (UTF-8, lone
  surrogates included), instead of the JSON error.
- ``POST /_emulator/config`` with any of the options above, ``api_key``, or ``fault_rate``: with
  ``fault_rate`` each admitted call without a queued fault meets a random one (429 with ``Retry-After: 1``,
  500, 503 or a malformed answer) with probability ``p`` (for soak runs). Answers the configuration.
- ``GET /_emulator/log``: every call, ``{"t": arrival (epoch s), "status", "ids", "fault", "tokens",
  "latency", "refused"}``; ``refused`` is ``null``, or why: ``"rps"``, ``"tpm"``, ``"context"``,
  ``"content"`` or ``"model"``.
- ``POST /_emulator/reset``: forget faults, the log, what the limits counted and the batches.

Standing behaviours: a conversation containing ``POISON`` makes any batch holding it come back truncated;
one containing ``INJECT`` plays a gullible model that obeys it, rewriting every other conversation's row
(one row per id still) to the sentiment the injection asks for ("sentiment 5"; 1.0 by default); one containing
``REFUSE`` has any batch holding it refused for its content.

Capacity: a thread per connection and a listen backlog of 1024. 300 calls of 20 conversations in flight at
once (latencies of median 20 s, 11 to 30 s) held 52 MB of resident memory, against 37 MB idle.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from ops.grok_answers import (POISON, REFUSE, analyze, asks_for_taxonomy, bend, completion, content_of, content_refused, holds,
                              prompt_too_long, unknown_model, xai_error)
from ops.grok_batches import BatchStore, route
from ops.grok_emulator_config import EmulatorConfig, parse_args
from ops.grok_limits import Limits
from ops.grok_rows import RowCache
from settings import load_settings

RANDOM_FAULTS = ({"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 503}, {"malformed": True})


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    wait: float = 0.0  # seconds before answering
    hang_up: bool = False  # promise the whole body, send half, close


class EmulatorState:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults: deque[dict[str, Any]] = deque()
        self.log: list[dict[str, Any]] = []
        self.limits = Limits()
        self.lock = threading.Lock()
        self.rows = RowCache(OfflineAnalyzer(Taxonomy(dict(load_settings({}).taxonomy), closed=True)))  # answers as_asked
        self.batches = BatchStore(self.rows, lambda: (self.config.batch_delay, self.config.batch_expiry, self.config.batch_error))
        self.reseed()

    def reseed(self) -> None:
        """Faults and latencies draw from generators of their own, so that neither shifts the other."""
        self.fault_random = random.Random(self.config.seed)
        self.latency_random = random.Random(self.config.seed + 1)

    def configure(self, changes: dict[str, Any]) -> None:
        with self.lock:
            self.config.update(changes)
            if "seed" in changes:
                self.reseed()

    def next_fault(self) -> dict[str, Any]:
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            if self.fault_random.random() < self.config.fault_rate:
                return dict(self.fault_random.choice(RANDOM_FAULTS))
            return {}

    def draw_latency(self) -> float:
        config = self.config
        latency = config.latency
        if config.latency_median > 0:
            with self.lock:
                latency += self.latency_random.lognormvariate(math.log(config.latency_median), config.latency_sigma)
        return min(latency, config.latency_max) if config.latency_max > 0 else latency

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.log.clear()
        self.limits.reset()
        self.batches.clear()


def refuse(entry: dict[str, Any], reason: str, status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    entry["refused"] = reason
    return Reply(status, xai_error(status, message), headers or {})


def respond(state: EmulatorState, key: str, body: dict[str, Any], entry: dict[str, Any]) -> Reply:
    """What Grok would answer to this call, and how long it would think first; fills in the log ``entry``."""
    config = state.config
    if key != config.api_key:
        return Reply(401, {"error": f"Incorrect API key provided: {key}. Obtain one from the console."})
    model = body.get("model", "?")
    if config.models and model not in config.models:
        return refuse(entry, "model", 404, unknown_model(model))
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
    fault = state.next_fault()
    entry["fault"] = fault or None
    entry["latency"] = state.draw_latency()
    wait = entry["latency"] + fault.get("delay", 0)
    status = fault.get("status", 200)
    if status != 200:
        headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
        body = fault["body"].encode("utf-8", "surrogatepass") if "body" in fault else {"error": f"emulated {status}"}
        return Reply(status, body, headers, wait)
    content, finish_reason = content_of(bend(rows, fault), fault, bool(holds(batch, POISON)))
    return Reply(200, completion(content, finish_reason, model, prompt_tokens), wait=wait, hang_up=bool(fault.get("hangup")))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: EmulatorState

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the log endpoint tells all
        pass

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def hang_up(self, data: bytes) -> None:
        """Promise ``data`` in full, send half of it and close the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def batch_api(self, body: Any = None) -> bool:
        """Answer a Batch API request (``ops/grok_batches.py``); ``False`` when it is not one."""
        if not self.path.startswith("/v1/batches"):
            return False
        if self.headers.get("Authorization", "").removeprefix("Bearer ") != self.state.config.api_key:
            self.send_json(401, {"error": "Incorrect API key provided."})
        else:
            self.send_json(*route(self.state.batches, self.command, self.path, body))
        return True

    def do_GET(self) -> None:
        if self.batch_api():
            return
        if self.path == "/_emulator/log":
            with self.state.lock:
                self.send_json(200, list(self.state.log))
        elif self.path == "/_emulator/batches":
            self.send_json(200, self.state.batches.overview())
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.read_json()
        if self.path == "/_emulator/faults":
            with self.state.lock:
                self.state.faults.extend(body)
            self.send_json(200, {"queued": len(self.state.faults)})
        elif self.path == "/_emulator/config":
            self.configure(body)
        elif self.path == "/_emulator/reset":
            self.state.reset()
            self.send_json(200, {})
        elif self.path.endswith("/chat/completions"):
            self.chat(arrived, body)
        elif not self.batch_api(body):
            self.send_json(404, {"error": "not found"})

    def configure(self, changes: dict[str, Any]) -> None:
        try:
            self.state.configure(changes)
        except (TypeError, ValueError) as error:
            return self.send_json(400, {"error": str(error)})
        self.send_json(200, {k: v for k, v in asdict(self.state.config).items() if k != "api_key"})

    def chat(self, arrived: float, body: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"t": arrived, "ids": [], "fault": None, "tokens": 0, "latency": 0.0, "refused": None}
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            reply = respond(self.state, key, body, entry)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            reply = Reply(400, xai_error(400, f"bad request: {type(error).__name__}: {error}"))
        entry["status"] = reply.status
        time.sleep(reply.wait)
        self.state.record(entry)  # before the answer: a caller that reads the log once answered finds its call there
        try:
            if reply.hang_up:
                return self.hang_up(json.dumps(reply.body).encode())
            self.send_json(reply.status, reply.body, reply.headers)
        except (BrokenPipeError, ConnectionResetError):
            with self.state.lock:  # the log is read under it
                entry["client_gone"] = True  # the caller hung up (a worker killed mid-call, a timeout)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # hundreds of calls connect at once (the kernel caps it at net.core.somaxconn)


def serve(port: int, config: EmulatorConfig) -> EmulatorServer:
    handler = type("BoundHandler", (Handler,), {"state": EmulatorState(config)})
    return EmulatorServer(("127.0.0.1", port), handler)


def main() -> None:
    args = vars(parse_args(__doc__.splitlines()[0]))
    port = args.pop("port")
    config = EmulatorConfig(**args)
    server = serve(port, config)
    print(f"Grok emulator on http://127.0.0.1:{port}/v1 ({json.dumps({k: v for k, v in args.items() if k != 'api_key'})})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
