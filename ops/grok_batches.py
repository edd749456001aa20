"""xAI's Batch API (native batches) as the emulator plays it: requests answered in the background, later.

What xAI documents (https://docs.x.ai/developers/advanced-api-usage/batch-api, read 2026-11-26; the shapes
of state, results and cancel as https://batchwork.dev/providers/xai describes them): a batch is created,
requests are added to it under a ``batch_request_id`` of the caller's, its state counts them, results are
paged with a ``pagination_token``, and it can be cancelled. Batch requests are billed at half price and do
not count towards the rate limits; most finish within 24 hours.

- ``POST /v1/batches`` ``{"name": ...}`` → the batch (``batch_id``, ``name``, ``create_time``, ``state``).
- ``POST /v1/batches/{id}/requests`` ``{"batch_requests": [{"batch_request_id": ..., "batch_request":
  {"chat_get_completion": <a chat-completions body>}}]}``. An id already in the batch is refused with
  ``400`` (how xAI treats a repeat is not documented: a client must not send one, and a test can see it).
- ``GET /v1/batches/{id}``: the batch; ``state`` has ``num_requests``, ``num_pending``, ``num_success``,
  ``num_error``, ``num_cancelled``.
- ``GET /v1/batches/{id}/results?limit=N&pagination_token=T``: ``{"results": [...], "pagination_token":
  next or null}``, finished requests in the order they were added: ``{"batch_request_id", "batch_result":
  {"response": {"chat_get_completion": <completion>}}}`` or ``{"batch_request_id", "error_message"}``.
- ``POST /v1/batches/{id}:cancel``: pending requests are cancelled; the batch is returned.

``GET /_emulator/batches`` (control API) lists every batch's state and counts the request ids sent twice.

Emulated behaviour (``POST /_emulator/config``): each request finishes ``batch_delay`` seconds after it was
added; a batch older than ``batch_expiry`` seconds (0: never) expires, its pending requests cancelled;
with ``batch_error`` set, every batch fails: its state carries ``error`` and nothing pending is answered. A
request whose conversations hold ``REFUSE`` ends in an error, one holding ``POISON`` in a truncated answer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ops.grok_answers import batch_answer
from ops.grok_rows import RowCache

PAGE_LIMIT = 100


@dataclass
class BatchRequest:
    id: str
    body: dict[str, Any]
    added: float
    outcome: dict[str, Any] | None = None  # the result entry, once finished
    cancelled: bool = False


@dataclass
class Batch:
    id: str
    name: str
    created: float
    requests: dict[str, BatchRequest] = field(default_factory=dict)  # in the order added
    duplicates: int = 0  # batch_request_ids sent again, refused
    error: str = ""  # the batch failed (batch_error): said in its state

    def document(self) -> dict[str, Any]:
        done = [r for r in self.requests.values() if r.outcome is not None]
        return {
            "batch_id": self.id, "name": self.name, "create_time": self.created,
            "state": {
                "num_requests": len(self.requests),
                "num_pending": sum(1 for r in self.requests.values() if r.outcome is None and not r.cancelled),
                "num_success": sum(1 for r in done if "batch_result" in r.outcome),
                "num_error": sum(1 for r in done if "error_message" in r.outcome),
                "num_cancelled": sum(1 for r in self.requests.values() if r.cancelled),
                **({"error": self.error} if self.error else {}),
            },
            "cost_breakdown": {"total_cost_usd_ticks": sum(
                r.outcome["batch_result"]["response"]["chat_get_completion"]["usage"]["cost_in_usd_ticks"]
                for r in done if "batch_result" in r.outcome)},
        }


class BatchStore:
    """Every batch of the emulator's life, settled lazily whenever one is read."""

    def __init__(self, rows: RowCache, settings: Callable[[], tuple[float, float, str]],
                 clock: Callable[[], float] = time.time) -> None:
        """``settings()``: the current ``(batch_delay, batch_expiry, batch_error)``."""
        self.rows = rows
        self.settings = settings
        self.clock = clock
        self.batches: dict[str, Batch] = {}
        self.lock = threading.Lock()

    def create(self, name: str) -> dict[str, Any]:
        batch = Batch(f"batch_{uuid.uuid4().hex}", name, self.clock())
        with self.lock:
            self.batches[batch.id] = batch
        return batch.document()

    def add(self, batch_id: str, items: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self._settled(batch_id)
            if batch is None:
                return 404, {"error": f"no batch {batch_id}"}
            repeated = [item["batch_request_id"] for item in items if item["batch_request_id"] in batch.requests]
            if repeated:
                batch.duplicates += len(repeated)
                return 400, {"error": f"batch_request_id already in the batch: {repeated[:3]}"}
            now = self.clock()
            for item in items:
                body = item["batch_request"]["chat_get_completion"]
                batch.requests[item["batch_request_id"]] = BatchRequest(item["batch_request_id"], body, now)
            return 200, {}

    def get(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self._settled(batch_id)
            return (200, batch.document()) if batch else (404, {"error": f"no batch {batch_id}"})

    def results(self, batch_id: str, limit: int, token: str | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self._settled(batch_id)
            if batch is None:
                return 404, {"error": f"no batch {batch_id}"}
            finished = [r.outcome for r in batch.requests.values() if r.outcome is not None]
            start = int(token or 0)
            page = finished[start:start + limit]
            more = start + limit < len(finished)
            return 200, {"results": page, "pagination_token": str(start + limit) if more else None}

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self._settled(batch_id)
            if batch is None:
                return 404, {"error": f"no batch {batch_id}"}
            for request in batch.requests.values():
                request.cancelled = request.cancelled or request.outcome is None
            return 200, batch.document()

    def clear(self) -> None:
        with self.lock:
            self.batches.clear()

    def overview(self) -> dict[str, Any]:
        """``GET /_emulator/batches``: every batch's state, and how many request ids were sent twice."""
        with self.lock:
            documents = [self._settled(batch_id).document() for batch_id in list(self.batches)]
            return {"batches": documents, "duplicates": sum(batch.duplicates for batch in self.batches.values())}

    def _settled(self, batch_id: str) -> Batch | None:
        """The batch with every request whose time has come answered (under the lock)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None
        delay, expiry, batch.error = self.settings()
        if batch.error:
            return batch
        now = self.clock()
        expired = expiry > 0 and now - batch.created >= expiry
        for request in batch.requests.values():
            if request.outcome is not None or request.cancelled:
                continue
            if now - request.added >= delay:
                request.outcome = self._outcome(request)
            elif expired:
                request.cancelled = True
        return batch

    def _outcome(self, request: BatchRequest) -> dict[str, Any]:
        try:
            answer, error = batch_answer(self.rows, request.body)
        except (KeyError, TypeError, ValueError, IndexError) as problem:
            answer, error = None, f"bad request: {type(problem).__name__}: {problem}"
        if error is not None:
            return {"batch_request_id": request.id, "error_message": error}
        return {"batch_request_id": request.id, "batch_result": {"response": {"chat_get_completion": answer}}}


def route(store: BatchStore, method: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
    """The answer to a Batch API request (``target``: a path under ``/v1/batches``, and its query)."""
    path, _, query = target.partition("?")
    parts = path.removeprefix("/v1/batches").strip("/").split("/")
    params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
    if method == "POST" and parts == [""]:
        return 200, store.create(str((body or {}).get("name", "")))
    if method == "POST" and len(parts) == 1 and parts[0].endswith(":cancel"):
        return store.cancel(parts[0].removesuffix(":cancel"))
    if method == "POST" and len(parts) == 2 and parts[1] == "requests":
        return store.add(parts[0], body["batch_requests"])
    if method == "GET" and len(parts) == 1:
        return store.get(parts[0])
    if method == "GET" and len(parts) == 2 and parts[1] == "results":
        return store.results(parts[0], min(int(params.get("limit", PAGE_LIMIT)), PAGE_LIMIT), params.get("pagination_token"))
    return 404, {"error": f"no such Batch API endpoint: {method} {path}"}
