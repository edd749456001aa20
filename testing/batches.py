"""xAI's Batch API (native batches) as the emulator plays it: requests answered in the background, later.

What xAI documents (https://docs.x.ai/developers/advanced-api-usage/batch-api, read again 2026-12-07, and
``batch.proto`` at github.com/xai-org/xai-proto): a batch is created, requests are added to it under a
``batch_request_id`` of the caller's, its state counts them, its results and its requests' states are paged
with ``limit`` and ``pagination_token``, and it can be cancelled, by its owner or by xAI.

- ``POST /v1/batches`` ``{"name": ...}`` → the batch (``batch_id``, ``name``, ``create_time``, ``state``).
- ``POST /v1/batches/{id}/requests`` ``{"batch_requests": [{"batch_request_id": ..., "batch_request":
  {"chat_get_completion": <a chat-completions body>}}]}``. An id already in the batch is refused with
  ``400`` (how xAI treats a repeat is not documented: a client must not send one, and a test can see it).
- ``GET /v1/batches/{id}``: the batch; ``state`` has ``num_requests``, ``num_pending``, ``num_success``,
  ``num_error``, ``num_cancelled``; ``cancel_by_xai_message`` once xAI refused it.
- ``GET /v1/batches/{id}/results?limit=N&pagination_token=T`` (``limit`` 100 by default, at most 1,000):
  ``{"results": [...], "pagination_token": next}``, finished requests in the order they were added:
  ``{"batch_request_id", "batch_result": {"response": {"chat_get_completion": <completion>}}}``, or an error.
- ``GET /v1/batches/{id}/requests?limit=N&pagination_token=T``: ``{"batch_request_metadata":
  [{"batch_request_id", "endpoint", "model", "state": pending|succeeded|failed|cancelled, "create_time",
  "finish_time"}], "pagination_token": next}``.
- ``POST /v1/batches/{id}:cancel``: pending requests are cancelled; the batch is returned.

``GET /_emulator/batches`` (control API) lists every batch's state, counts the request ids sent twice
(``duplicates``) and the calls refused for their key (``unauthorized``) and when calls were refused for
exhausted credits (``out_of_credits``).

Emulated behaviour (``POST /_emulator/config``): each request finishes ``batch_delay`` seconds after it was
added; a batch older than ``batch_expiry`` seconds (0: never) expires, its pending requests cancelled;
with ``batch_error`` set, every batch fails: its state carries ``error`` and nothing pending is answered;
with ``batch_refusal`` set, every batch holding requests is refused outright by xAI once read: its
``cancel_by_xai_message`` says so, every counter is zero, nothing is answered and nothing more is taken. A
request whose conversations hold ``REFUSE`` ends in an error, written as ``batch_error_shape`` says
(``string``: ``error_message``; ``object``: ``error: {"code", "message"}``; ``empty``: an empty
``batch_result``), one holding ``POISON`` in a truncated answer. ``batch_page_end`` says how the last page
ends: ``null``, ``empty`` (``""``) or ``absent`` as a token, or ``endless`` (a token on every page, then
empty pages). An add-requests body over ``batch_max_add_bytes`` (xAI's 25 MB a request) is refused with
``413``, nothing of it taken.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from testing.answers import batch_answer
from testing.rows import RowCache

PAGE_DEFAULT, PAGE_LIMIT = 100, 1000
ERROR_SHAPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "string": lambda message: {"error_message": message},
    "object": lambda message: {"error": {"code": 7, "message": message}},  # google.rpc.Status
    "empty": lambda message: {"batch_result": {}},
}


class BatchSettings(Protocol):
    """What of the emulator's configuration the Batch API reads (``EmulatorConfig``), at every call."""

    batch_delay: float
    batch_expiry: float
    batch_error: str
    batch_refusal: str
    batch_error_shape: str
    batch_page_end: str
    batch_max_add_bytes: int


@dataclass
class BatchRequest:
    id: str
    body: dict[str, Any]
    added: float
    outcome: dict[str, Any] | None = None  # the result entry, once finished
    failed: bool = False  # the outcome is an error
    cancelled: bool = False

    def state(self) -> str:
        if self.cancelled:
            return "cancelled"
        if self.outcome is None:
            return "pending"
        return "failed" if self.failed else "succeeded"

    def metadata(self) -> dict[str, Any]:
        return {
            "batch_request_id": self.id,
            "endpoint": "chat_get_completion",
            "model": self.body.get("model", "?"),
            "state": self.state(),
            "create_time": self.added,
            "finish_time": None,
        }


@dataclass
class Batch:
    id: str
    name: str
    created: float
    requests: dict[str, BatchRequest] = field(default_factory=dict)  # in the order added
    duplicates: int = 0  # batch_request_ids sent again, refused
    error: str = ""  # the batch failed (batch_error): said in its state
    refusal: str = ""  # xAI refused it outright (batch_refusal): its cancel_by_xai_message

    def document(self) -> dict[str, Any]:
        states = [r.state() for r in self.requests.values()]
        return {
            "batch_id": self.id,
            "name": self.name,
            "create_time": self.created,
            **({"cancel_by_xai_message": self.refusal} if self.refusal else {}),
            "state": {
                "num_requests": len(states),
                "num_pending": states.count("pending"),
                "num_success": states.count("succeeded"),
                "num_error": states.count("failed"),
                "num_cancelled": states.count("cancelled"),
                **({"error": self.error} if self.error else {}),
            },
            "cost_breakdown": {
                "total_cost_usd_ticks": sum(
                    r.outcome["batch_result"]["response"]["chat_get_completion"]["usage"]["cost_in_usd_ticks"]
                    for r in self.requests.values()
                    if r.state() == "succeeded"
                )
            },
        }


def page(entries: list[dict[str, Any]], key: str, limit: int, token: str | None, end: str) -> dict[str, Any]:
    """One page of ``entries`` from the offset ``token``, its next token ended as ``end`` says."""
    start = int(token or 0)
    document: dict[str, Any] = {key: entries[start : start + limit]}
    more = start + limit < len(entries)
    if more or end == "endless":
        document["pagination_token"] = str(start + limit)
    elif end != "absent":
        document["pagination_token"] = None if end == "null" else ""
    return document


class BatchStore:
    """Every batch of the emulator's life, settled lazily whenever one is read."""

    def __init__(self, rows: RowCache, settings: BatchSettings, clock: Callable[[], float] = time.time) -> None:
        self.rows = rows
        self.settings = settings
        self.clock = clock
        self.batches: dict[str, Batch] = {}
        self.unauthorized = 0  # calls refused for their key
        self.out_of_credits: list[float] = []  # when calls were refused for exhausted credits
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
            if batch.refusal:
                return 400, {"error": f"batch {batch_id} was cancelled by xAI: {batch.refusal}"}
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

    def listing(self, batch_id: str, what: str, limit: int, token: str | None) -> tuple[int, dict[str, Any]]:
        """A page of the batch's results (``what``: ``results``) or of its requests' states (``requests``)."""
        with self.lock:
            batch = self._settled(batch_id)
            if batch is None:
                return 404, {"error": f"no batch {batch_id}"}
            if what == "results":
                entries, key = [r.outcome for r in batch.requests.values() if r.outcome is not None], "results"
            else:
                entries, key = [r.metadata() for r in batch.requests.values()], "batch_request_metadata"
            return 200, page(entries, key, limit, token, self.settings.batch_page_end)

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            batch = self._settled(batch_id)
            if batch is None:
                return 404, {"error": f"no batch {batch_id}"}
            for request in batch.requests.values():
                request.cancelled = request.cancelled or request.outcome is None
            return 200, batch.document()

    def refused_key(self) -> None:
        with self.lock:
            self.unauthorized += 1

    def refused_for_credits(self) -> None:
        with self.lock:
            self.out_of_credits.append(self.clock())

    def clear(self) -> None:
        with self.lock:
            self.batches.clear()
            self.unauthorized = 0
            self.out_of_credits.clear()

    def overview(self) -> dict[str, Any]:
        """``GET /_emulator/batches``: every batch's state, the request ids sent twice, the refused keys."""
        with self.lock:
            documents = [self._settled(batch_id).document() for batch_id in list(self.batches)]
            return {
                "batches": documents,
                "duplicates": sum(batch.duplicates for batch in self.batches.values()),
                "unauthorized": self.unauthorized,
                "out_of_credits": list(self.out_of_credits),
            }

    def _settled(self, batch_id: str) -> Batch | None:
        """The batch with every request whose time has come answered (under the lock)."""
        batch = self.batches.get(batch_id)
        if batch is None:
            return None
        settings = self.settings
        if settings.batch_refusal and batch.requests and not batch.refusal:
            batch.refusal, batch.requests = settings.batch_refusal, {}
        batch.error = settings.batch_error
        if batch.error or batch.refusal:
            return batch
        now = self.clock()
        expired = settings.batch_expiry > 0 and now - batch.created >= settings.batch_expiry
        for request in batch.requests.values():
            if request.outcome is not None or request.cancelled:
                continue
            if now - request.added >= settings.batch_delay:
                request.outcome, request.failed = self._outcome(request)
            elif expired:
                request.cancelled = True
        return batch

    def _outcome(self, request: BatchRequest) -> tuple[dict[str, Any], bool]:
        """The request's result entry, and whether it is an error."""
        try:
            answer, error = batch_answer(self.rows, request.body)
        except (KeyError, TypeError, ValueError, IndexError) as problem:
            answer, error = None, f"bad request: {type(problem).__name__}: {problem}"
        if error is not None:
            return {"batch_request_id": request.id, **ERROR_SHAPES[self.settings.batch_error_shape](error)}, True
        return {"batch_request_id": request.id, "batch_result": {"response": {"chat_get_completion": answer}}}, False


def route(store: BatchStore, method: str, target: str, body: Any, size: int = 0) -> tuple[int, dict[str, Any]]:
    """The answer to a Batch API request (``target``: a path under ``/v1/batches``, and its query; ``size``:
    its body's bytes)."""
    path, _, query = target.partition("?")
    parts = path.removeprefix("/v1/batches").strip("/").split("/")
    params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair)
    if method == "POST" and parts == [""]:
        return 200, store.create(str((body or {}).get("name", "")))
    if method == "POST" and len(parts) == 1 and parts[0].endswith(":cancel"):
        return store.cancel(parts[0].removesuffix(":cancel"))
    if method == "POST" and len(parts) == 2 and parts[1] == "requests":
        if size > (most := store.settings.batch_max_add_bytes):
            return 413, {"error": f"request body of {size} bytes is over the limit of {most} bytes"}
        return store.add(parts[0], body["batch_requests"])
    if method == "GET" and len(parts) == 1:
        return store.get(parts[0])
    if method == "GET" and len(parts) == 2 and parts[1] in ("results", "requests"):
        limit = max(1, min(int(params.get("limit") or PAGE_DEFAULT), PAGE_LIMIT))
        return store.listing(parts[0], parts[1], limit, params.get("pagination_token"))
    return 404, {"error": f"no such Batch API endpoint: {method} {path}"}
