"""A local stand-in for xAI's chat-completions API that injects faults on demand.

``python -m ops.grok_emulator --port 8500 --api-key KEY [--latency 1.0]`` serves
``POST /v1/chat/completions``. It answers like Grok with structured output: it reads the batch (the JSON
document in the user message) and analyzes each conversation with the offline analyzer.

Control endpoints, for tests and benchmarks:

- ``POST /_emulator/faults`` with a JSON list: each fault is used by one coming call, in order:
  ``{"status": 429, "retry_after": "2"}`` (``retry_after`` may be an HTTP date, or absent),
  ``{"status": 500}`` (any status), ``{"delay": 5}`` (answer late), ``{"malformed": true}``,
  ``{"truncate": true}`` (``finish_reason: length``), ``{"drop_rows": 1}``,
  ``{"extra_row": "some-id"}``, ``{"out_of_range": true}``, ``{"unstorable": true}`` (a NUL in the first
  row's reasoning and clusters, a lone surrogate in the last row's: valid JSON escapes, ``\\u0000`` and
  ``\\ud800``, that no database stores as they decode). An error status may carry ``"body"``: that text,
  sent as is (UTF-8, lone surrogates included), instead of the JSON error.
- ``POST /_emulator/config`` with ``{"latency": s, "api_key": k, "fault_rate": p}``: with ``fault_rate``
  each call without a queued fault meets a random one (429 with ``Retry-After: 1``, 500, 503 or a
  malformed answer) with probability ``p`` (for soak runs).
- ``GET /_emulator/log``: every call, ``{"t": arrival (epoch s), "status", "ids", "fault"}``.
- ``POST /_emulator/reset``: forget faults and the log.

Standing behaviours: a conversation containing ``POISON`` makes any batch holding it come back truncated;
one containing ``INJECT`` plays a gullible model that obeys it, adding rows that set every other
conversation of the batch to a sentiment of 1.0 (the service must not let that through).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from insights.analyzer import ConversationToAnalyze
from insights.offline import OfflineAnalyzer
from settings import load_settings

POISON = "POISON"
INJECT = "INJECT"


RANDOM_FAULTS = ({"status": 429, "retry_after": "1"}, {"status": 500}, {"status": 503}, {"malformed": True})


class EmulatorState:
    def __init__(self, api_key: str, latency: float) -> None:
        self.api_key = api_key
        self.latency = latency
        self.fault_rate = 0.0
        self.random = random.Random(42)
        self.faults: deque[dict[str, Any]] = deque()
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.analyzer = OfflineAnalyzer(load_settings({}).taxonomy)

    def next_fault(self) -> dict[str, Any]:
        with self.lock:
            if self.faults:
                return self.faults.popleft()
            if self.random.random() < self.fault_rate:
                return dict(self.random.choice(RANDOM_FAULTS))
            return {}

    def record(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append(entry)


def completion(content: str, finish_reason: str, model: str, prompt_chars: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-emulated-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(content) // 4, "total_tokens": (prompt_chars + len(content)) // 4},
    }


def analyze(state: EmulatorState, conversations: list[dict[str, Any]], fault: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the batch, bent by the fault and by any injection the batch contains."""
    rows = [
        state.analyzer.analyze_one(ConversationToAnalyze(c["conversation_id"], c["messages"]))
        for c in conversations
    ]
    injectors = [c for c in conversations if any(INJECT in m["content"] for m in c["messages"])]
    if injectors:
        rows += [
            {**row, "sentiment_score": 1.0, "confidence": 1.0, "reasoning": "as instructed"}
            for row in rows
            if row["conversation_id"] not in {c["conversation_id"] for c in injectors}
        ]
    if fault.get("drop_rows"):
        rows = rows[fault["drop_rows"]:]
    if fault.get("extra_row"):
        rows.append({**rows[0], "conversation_id": fault["extra_row"]})
    if fault.get("out_of_range") and rows:
        rows[0] = {**rows[0], "sentiment_score": 3.5}
    if fault.get("unstorable") and rows:
        rows[0] = {**rows[0], "reasoning": f"NUL \x00 {rows[0]['reasoning']}", "clusters": [*rows[0]["clusters"], "nul\x00"]}
        rows[-1] = {**rows[-1], "reasoning": f"surrogate \ud800 {rows[-1]['reasoning']}", "clusters": ["\ud800", *rows[-1]["clusters"]]}
    return rows


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

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        if self.path == "/_emulator/log":
            with self.state.lock:
                self.send_json(200, list(self.state.log))
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
            self.state.latency = float(body.get("latency", self.state.latency))
            self.state.api_key = body.get("api_key", self.state.api_key)
            self.state.fault_rate = float(body.get("fault_rate", self.state.fault_rate))
            self.send_json(200, {"latency": self.state.latency})
        elif self.path == "/_emulator/reset":
            with self.state.lock:
                self.state.faults.clear()
                self.state.log.clear()
            self.send_json(200, {})
        elif self.path.endswith("/chat/completions"):
            self.chat(arrived, body)
        else:
            self.send_json(404, {"error": "not found"})

    def chat(self, arrived: float, body: dict[str, Any]) -> None:
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        entry: dict[str, Any] = {"t": arrived, "ids": [], "fault": None}
        try:
            if key != self.state.api_key:
                entry["status"] = 401
                return self.send_json(401, {"error": f"Incorrect API key provided: {key}. Obtain one from the console."})
            batch = json.loads(body["messages"][-1]["content"])["conversations"]
            entry["ids"] = [c["conversation_id"] for c in batch]
            fault = self.state.next_fault()
            entry["fault"] = fault or None
            time.sleep(self.state.latency + fault.get("delay", 0))
            status = fault.get("status", 200)
            if status != 200:
                entry["status"] = status
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                body = fault["body"].encode("utf-8", "surrogatepass") if "body" in fault else {"error": f"emulated {status}"}
                return self.send_json(status, body, headers)
            content = json.dumps({"results": analyze(self.state, batch, fault)})
            finish_reason = "stop"
            poisoned = any(POISON in m["content"] for c in batch for m in c["messages"])
            if fault.get("truncate") or poisoned:
                content, finish_reason = content[: len(content) // 2], "length"
            if fault.get("malformed"):
                content = "Sure! Here are the insights you asked for: {results: [oops"
            entry["status"] = 200
            self.send_json(200, completion(content, finish_reason, body.get("model", "?"), len(json.dumps(body))))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            entry["status"] = 400
            self.send_json(400, {"error": f"bad request: {type(error).__name__}: {error}"})
        except (BrokenPipeError, ConnectionResetError):
            entry["client_gone"] = True  # the caller hung up (a worker killed mid-call, a timeout)
        finally:
            self.state.record(entry)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many workers connect at once


def serve(port: int, api_key: str, latency: float) -> EmulatorServer:
    handler = type("BoundHandler", (Handler,), {"state": EmulatorState(api_key, latency)})
    return EmulatorServer(("127.0.0.1", port), handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--api-key", default="emulator-key")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    server = serve(args.port, args.api_key, args.latency)
    print(f"Grok emulator on http://127.0.0.1:{args.port}/v1 (latency {args.latency} s)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
