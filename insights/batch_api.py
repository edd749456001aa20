"""A client of xAI's Batch API (native batches), as the bulk lane uses it.

From https://docs.x.ai/developers/advanced-api-usage/batch-api (read 2026-11-26): a batch is created,
requests are added to it, each under a ``batch_request_id`` of the caller's, its ``state`` counts them,
and finished requests are read back a page at a time; batch requests cost half the real-time price and do
not count towards the per-minute rate limits; most finish within 24 hours. The shapes of the results and
of cancelling follow https://batchwork.dev/providers/xai, and RubyLLM's xAI client reads them the same way
(``lib/ruby_llm/providers/xai/chat_completions/batches.rb``: a batch is done when ``num_requests`` > 0 and
``num_pending`` = 0; a completion under ``batch_result.response.chat_get_completion``):

- ``POST {base}/batches`` ``{"name"}`` -> ``{"batch_id", ...}``;
- ``POST {base}/batches/{id}/requests`` ``{"batch_requests": [{"batch_request_id", "batch_request":
  {"chat_get_completion": <a chat-completions body>}}]}`` (at most 25 MB a call);
- ``GET {base}/batches/{id}`` -> ``{"state": {"num_requests", "num_pending", "num_success", "num_error",
  "num_cancelled"}}``;
- ``GET {base}/batches/{id}/results?limit=&pagination_token=`` -> ``{"results": [{"batch_request_id",
  "batch_result": {"response": {"chat_get_completion": <completion>}}} or {"batch_request_id",
  "error_message"}], "pagination_token"}``;
- ``POST {base}/batches/{id}:cancel``.

Errors are :class:`BatchApiError`, worded like the real-time client's: never quoting the key.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import requests
import requests.adapters

from insights.refusals import error_detail, parse_retry_after
from settings import Settings

RESULTS_PAGE = 100
CONNECTIONS = 4  # the bulk lane makes a few calls a minute, one at a time

# Raised before anything is sent: the operator's to fix (GROK_BASE_URL, GROK_API_KEY), not xAI's.
UNSENDABLE = (
    requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema, requests.exceptions.URLRequired,
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

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def already_added(self) -> bool:
        """A refusal of requests because their ids are in the batch already: they were sent before."""
        return self.status == 400 and "already" in str(self).lower()


class BatchApi:
    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.base = settings.grok_base_url.rstrip("/") + "/batches"
        self.timeout = (settings.grok_connect_timeout_seconds, settings.grok_read_timeout_seconds)
        self.session = session or pooled_session(CONNECTIONS)
        self.session.headers["Authorization"] = f"Bearer {settings.grok_api_key}"
        self._key = settings.grok_api_key

    def create(self, name: str) -> str:
        """A new, empty batch; its id."""
        return str(self._call("POST", "", {"name": name})["batch_id"])

    def add(self, batch_id: str, requests_by_id: dict[str, dict[str, Any]]) -> None:
        """Add chat-completions bodies to the batch, each under its ``batch_request_id``."""
        items = [{"batch_request_id": request_id, "batch_request": {"chat_get_completion": body}}
                 for request_id, body in requests_by_id.items()]
        self._call("POST", f"/{batch_id}/requests", {"batch_requests": items})

    def state(self, batch_id: str) -> tuple[dict[str, int], str]:
        """The batch's counters (``num_requests``, ``num_pending``, ``num_success``, ``num_error``,
        ``num_cancelled``; missing ones as 0) and its error, if it failed as a whole ("" if not)."""
        state = self._call("GET", f"/{batch_id}").get("state") or {}
        names = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")
        return {name: int(state.get(name) or 0) for name in names}, str(state.get("error") or "")[:300]

    def results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """Every finished request's result, a page at a time."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"limit": RESULTS_PAGE}
            if token:
                params["pagination_token"] = token
            page = self._call("GET", f"/{batch_id}/results", params=params)
            yield from page.get("results") or []
            token = page.get("pagination_token")
            if not token:
                return

    def cancel(self, batch_id: str) -> None:
        self._call("POST", f"/{batch_id}:cancel", {})

    def _call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            response = self.session.request(method, self.base + path, json=body, params=params, timeout=self.timeout)
        except Exception as error:  # named by its class only: requests may quote the headers
            raise BatchApiError(f"Batch API {method} {path or '/'}: {classify(error, time.monotonic() - started)}") from None
        if response.status_code >= 300:
            raise BatchApiError(
                f"Batch API {method} {path or '/'} answered {response.status_code}{error_detail(response, self._key)}",
                response.status_code, parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            document = response.json()
        except ValueError:
            raise BatchApiError(f"Batch API {method} {path or '/'} answered something that is not JSON") from None
        if not isinstance(document, dict):
            raise BatchApiError(f"Batch API {method} {path or '/'} answered JSON that is not an object")
        return document
