"""Why a batch could not be analyzed, one class per reaction (``actors.analysis`` decides what to do).

- :class:`TransientError` (408, 5xx, timeouts, connection errors): the batch is retried with backoff,
  an attempt of each conversation spent.
- :class:`RateLimited` (429) and :class:`ProviderBusy` (the shared gate has no slot soon): the
  provider's weather. Not an attempt: the batch is set aside until the pause is over.
- :class:`UnusableAnswer` (truncated, not the JSON asked for), :class:`RequestRefused` (400, 413, 422:
  refused for what it contains, e.g. too long for the context window, content policy) and
  :class:`OverBudget` (larger than the whole token budget): split the batch; a single conversation that
  is still refused fails with the provider's reason, its neighbours complete.
- :class:`MisconfiguredError` (401, 403, 404 and other refusals of the request itself): the operator's
  to fix; every worker leaves Grok alone for a while, nothing is spent.
- :class:`CreditsExhausted` (any refusal that speaks of credits or a spending limit): the operator's to
  pay for; every worker leaves Grok alone but for one probe call a pause, nothing is spent.

Messages never contain the API key.
"""

from __future__ import annotations


class GrokError(Exception):
    """Base of the analysis errors."""


class TransientError(GrokError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(GrokError):
    """Grok answered 429: wait ``retry_after`` seconds (the gate pauses every process until then)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderBusy(GrokError):
    """No call may start within the gate's longest wait (a long pause, a long queue): come back later."""

    def __init__(self, retry_after: float, why: str = "rate limits or a pause") -> None:
        super().__init__(f"waiting for Grok: no call slot for {retry_after:.0f} s ({why})")
        self.retry_after = retry_after


class CreditsExhausted(GrokError):
    """The team's credits are used up or its monthly spending limit is reached: no wait cures it, a person
    must pay. Set aside like the provider's weather, ``retry_after`` seconds (the gate holds every process)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnusableAnswer(GrokError):
    """The answer is truncated or not the JSON asked for; a smaller batch may succeed."""


class RequestRefused(GrokError):
    """The request was refused for what it contains (400, 413, 422); a smaller batch may pass, and the
    one conversation that does not is failed with this message."""


class OverBudget(GrokError):
    """The call alone is estimated above the whole ``OUTBOUND_TPM``: only a smaller batch can go."""


class MisconfiguredError(GrokError):
    """The request itself is refused (bad key, unknown model...): retrying will not help until fixed."""


#: Errors that a smaller batch may not meet: the batch is split in halves, down to single conversations.
SPLITTABLE = (UnusableAnswer, RequestRefused, OverBudget)
