"""A client of xAI's Batch API (native batches), as the bulk lane uses it.

From https://docs.x.ai/developers/advanced-api-usage/batch-api (read again 2026-12-07) and xAI's
``batch.proto`` (github.com/xai-org/xai-proto): a batch is created, requests are added to it, each under a
``batch_request_id`` of the caller's, its ``state`` counts them, and its results and its requests are read
back a page at a time; most finish within 24 hours:

- ``POST {base}/batches`` ``{"name"}`` -> ``{"batch_id", ...}``;
- ``POST {base}/batches/{id}/requests`` ``{"batch_requests": [{"batch_request_id", "batch_request":
  {"chat_get_completion": <a chat-completions body>}}]}`` (at most 25 MB a call);
- ``GET {base}/batches/{id}`` -> ``{"state": {"num_requests", "num_pending", "num_success", "num_error",
  "num_cancelled"}, "cancel_by_xai_message"?}``: the message is set when xAI itself cancelled the batch;
- ``GET {base}/batches/{id}/results?limit=&pagination_token=`` -> ``{"results": [{"batch_request_id",
  "batch_result": {"response": {"chat_get_completion": <completion>}}} or {"batch_request_id",
  "error_message"}], "pagination_token"}``; the proto's error is a ``google.rpc.Status`` (``error``:
  ``{"code", "message"}``), so an error is read as a string or an object, and an empty ``batch_result``
  as an error too;
- ``GET {base}/batches/{id}/requests?limit=&pagination_token=`` -> ``{"batch_request_metadata":
  [{"batch_request_id", "state", ...}], "pagination_token"}``: what xAI holds;
- ``POST {base}/batches/{id}:cancel``.

Pages are read with the largest ``limit`` (1,000; xAI's default is 100) until a page is empty or comes
without a ``pagination_token`` (``null``, ``""`` or absent: "When pagination_token is None, you've reached
the end"). Errors are :class:`BatchApiError`, worded like the real-time client's: never quoting the key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests
import requests.adapters

from insights.refusals import credits_exhausted, error_detail, parse_retry_after, refused_for_content
from settings import Settings

PAGE_LIMIT = 1000  # the most results or request states one page may hold
COUNTERS = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")
CONNECTIONS = 4  # the bulk lane makes a few calls a minute, one at a time

# Raised before anything is sent: the operator's to fix (GROK_BASE_URL, GROK_API_KEY), not xAI's.
UNSENDABLE = (
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
)


def classify(error: Exception, elapsed: float) -> str:
    """What a Batch API call raised, in words that name its class and never quote it (nor the key)."""
    name = type(error).__name__
    if isinstance(error, UNSENDABLE):
        return f"cannot send a request to xAI ({name}): check GROK_BASE_URL and GROK_API_KEY"
    if isinstance(error, requests.Timeout):
        return f"timed out after {elapsed:.1f} s ({name})"
    if isinstance(error, requests.ConnectionError):
        return f"cannot reach xAI ({name})"
    return f"call failed ({name})"


def pooled_session(connections: int) -> requests.Session:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class BatchApiError(Exception):
    """A Batch API call failed; the bulk lane tries again at its next look."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None, credits_exhausted: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.credits_exhausted = credits_exhausted  # xAI says the team's credits or spending limit are used up

    @property
    def refuses_key(self) -> bool:
        """A refusal of our key (401; a 400 or 403 not about what was sent), read as the real-time lane
        reads one (:func:`insights.refusals.refused_for_content`): every worker must leave xAI alone."""
        if self.status == 401:
            return True
        return (
            self.status in (400, 403) and not self.credits_exhausted and not refused_for_content(self.status, str(self))
        )

    @property
    def refused_request(self) -> bool:
        """A ``4xx`` refusal of what was asked (not of our key, nor a rate limit)."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status != 429
            and not self.refuses_key
            and not self.credits_exhausted
        )


@dataclass(frozen=True)
class BatchStatus:
    """A batch as ``GET /v1/batches/{id}`` shows it."""

    counters: dict[str, int] = field(default_factory=dict)  # COUNTERS, missing ones as 0
    failure: str = ""  # ``state.error``: it failed as a whole ("" if not)
    refusal: str = ""  # ``cancel_by_xai_message``: xAI cancelled it itself ("" if not)


def error_of(entry: dict[str, Any]) -> str | None:
    """Why a result entry holds no chat completion, or ``None`` when it holds one. The error may be a
    string or an object (``google.rpc.Status``: ``code``, ``message``), under ``error_message`` or
    ``error``; a result without either and without a completion (an empty ``batch_result``) is named so."""
    for key in ("error_message", "error"):
        value = entry.get(key)
        if isinstance(value, dict):
            value = value.get("message") or json.dumps(value, ensure_ascii=False)
        if value:
            return str(value)[:300]
    if completion_of(entry) is None:
        return "the Batch API's result holds no chat completion"
    return None


def completion_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The chat completion of a result entry (``batch_result.response.chat_get_completion``), if any."""
    result = entry.get("batch_result")
    response = result.get("response") if isinstance(result, dict) else None
    document = response.get("chat_get_completion") if isinstance(response, dict) else None
    return document if isinstance(document, dict) and document else None


JSON = {"Content-Type": "application/json"}


def encoded(body: dict[str, Any]) -> bytes:
    """``body`` as the Batch API is sent it: UTF-8 JSON (escaped, text in most scripts would take twice
    the bytes of xAI's 25 MB a request)."""
    return json.dumps(body, ensure_ascii=False).encode()


class BatchApi:
    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.base = settings.grok_base_url.rstrip("/") + "/batches"
        self.timeout = (settings.grok_connect_timeout_seconds, settings.grok_read_timeout_seconds)
        self.session = session or pooled_session(CONNECTIONS)
        self.session.headers["Authorization"] = f"Bearer {settings.grok_api_key}"
        self._key = settings.grok_api_key

    def create(self, name: str) -> str:
        """A new, empty batch; its id."""
        batch_id = self._call("POST", "", {"name": name}).get("batch_id")
        if not isinstance(batch_id, str) or not batch_id:
            raise BatchApiError("Batch API POST /: answered no batch_id")
        return batch_id

    def add(self, batch_id: str, requests_by_id: dict[str, dict[str, Any]]) -> None:
        """Add chat-completions bodies to the batch, each under its ``batch_request_id``."""
        items = [
            {"batch_request_id": request_id, "batch_request": {"chat_get_completion": body}}
            for request_id, body in requests_by_id.items()
        ]
        self._call("POST", f"/{batch_id}/requests", {"batch_requests": items})

    def state(self, batch_id: str) -> BatchStatus:
        """The batch's counters, and whether it failed as a whole or xAI refused it."""
        document = self._call("GET", f"/{batch_id}")
        state = document.get("state") if isinstance(document.get("state"), dict) else {}
        return BatchStatus(
            {name: int(state.get(name) or 0) for name in COUNTERS},
            str(state.get("error") or "")[:300],
            str(document.get("cancel_by_xai_message") or "")[:300],
        )

    def results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every finished request's result."""
        return self._pages(f"/{batch_id}/results", "results")

    def held(self, batch_id: str) -> set[str]:
        """The ``batch_request_id`` of every request xAI holds in the batch, whatever its state."""
        return {
            str(entry.get("batch_request_id"))
            for entry in self._pages(f"/{batch_id}/requests", "batch_request_metadata")
        }

    def _pages(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        """The entries under ``key`` of every page, until a page is empty or names no next page."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": PAGE_LIMIT, **({"pagination_token": token} if token else {})}
            page = self._call("GET", path, params=params)
            entries = page.get(key) if isinstance(page.get(key), list) else []
            yield from (entry for entry in entries if isinstance(entry, dict))
            token = page.get("pagination_token")
            if not entries or not token:
                return

    def cancel(self, batch_id: str) -> None:
        self._call("POST", f"/{batch_id}:cancel", {})

    def _call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                self.base + path,
                data=None if body is None else encoded(body),
                headers=JSON,
                params=params,
                timeout=self.timeout,
            )
        except Exception as error:  # named by its class only: requests may quote the headers
            raise BatchApiError(
                f"Batch API {method} {path or '/'}: {classify(error, time.monotonic() - started)}"
            ) from None
        if response.status_code >= 300:
            raise BatchApiError(
                f"Batch API {method} {path or '/'} answered {response.status_code}{error_detail(response, self._key)}",
                response.status_code,
                parse_retry_after(response.headers.get("Retry-After")),
                credits_exhausted(response.status_code, response.text),
            )
        try:
            document = response.json()
        except ValueError:
            raise BatchApiError(f"Batch API {method} {path or '/'} answered something that is not JSON") from None
        if not isinstance(document, dict):
            raise BatchApiError(f"Batch API {method} {path or '/'} answered JSON that is not an object")
        return document
