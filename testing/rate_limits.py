"""The xAI emulator's rate limits: requests per second and tokens per minute, per model, by arrival time.

Each limit is a sliding log of what it admitted (arrival time, cost). A call is admitted only when every
limit has room for it, and only then charged: a refused call costs nothing.

What xAI says (https://docs.x.ai/developers/rate-limits): limits are per team and model, on requests per
second (derived from a per-minute budget, RPM / 60, against bursts) and tokens per minute, where every
token counts (prompt, completion, reasoning, cached); over either is ``429 Too Many Requests``. A TPM
refusal reads "Too many tokens for team <id> and model grok-4-0709. Your team's rate limit is — Tokens per
Minute (actual/limit): 65605/16000. You can view your team rate limits at https://console.x.ai."
(https://github.com/cline/cline/issues/4826).

What it does not say, and the emulator chose: windows slide by arrival time; refused calls cost nothing;
the RPS message is modelled on the TPM one; the ``code`` of a 429 ("Some resource has been exhausted",
gRPC's RESOURCE_EXHAUSTED) is a guess. Neither ``Retry-After`` nor any ``x-ratelimit-*`` header is
documented: a 429 here carries ``Retry-After`` (whole seconds until the call would fit, at least 1; a call
larger than the whole limit gets the window's length, and will never fit) and OpenAI's
``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the limit that refused it.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field

TEAM = "emulator-team"


@dataclass
class SlidingWindow:
    """Costs admitted, as (arrival time, cost), sorted by arrival.

    Threads may charge calls slightly out of arrival order, so entries are kept one window length longer
    than needed: a call arriving late still counts everything within one window length of its arrival.
    """

    entries: list[tuple[float, int]] = field(default_factory=list)

    def wait(self, now: float, cost: int, limit: int, length: float) -> tuple[float, int]:
        """Seconds until ``cost`` fits under ``limit`` (0: it fits now; ``length`` if it can never fit), and
        the cost the window holds already."""
        del self.entries[: bisect.bisect_right(self.entries, (now - 2 * length, math.inf))]
        inside = self.entries[bisect.bisect_right(self.entries, (now - length, math.inf)) :]
        used = sum(spent for _, spent in inside)
        excess = used + cost - limit
        if excess <= 0:
            return 0.0, used
        for arrived, spent in inside:  # the oldest leave first
            excess -= spent
            if excess <= 0:
                return arrived + length - now, used
        return length, used

    def add(self, now: float, cost: int) -> None:
        bisect.insort(self.entries, (now, cost))


@dataclass(frozen=True)
class Refusal:
    """A call over a limit: what xAI would answer with its ``429``."""

    kind: str  # "rps" or "tpm"
    retry_after: int  # whole seconds until the call would fit
    used: int  # what the window holds already
    cost: int  # what the call asked for
    limit: int

    def message(self, model: str) -> str:
        what, rate = ("requests", "Requests per Second") if self.kind == "rps" else ("tokens", "Tokens per Minute")
        return (
            f"Too many {what} for team {TEAM} and model {model}. Your team's rate limit is — {rate} "
            f"(actual/limit): {self.used + self.cost}/{self.limit}. You can view your team rate limits at https://console.x.ai."
        )

    def headers(self) -> dict[str, str]:
        """``Retry-After``, and OpenAI's ``x-ratelimit-*`` names (xAI does not document its own)."""
        unit = "requests" if self.kind == "rps" else "tokens"
        return {
            "Retry-After": str(self.retry_after),
            f"x-ratelimit-limit-{unit}": str(self.limit),
            f"x-ratelimit-remaining-{unit}": str(max(0, self.limit - self.used)),
            f"x-ratelimit-reset-{unit}": f"{self.retry_after}s",
        }


class Limits:
    """Per-model windows for ``rps`` (1 s) and ``tpm`` (``tpm_window`` s); a limit of 0 is none."""

    def __init__(self) -> None:
        self.windows: defaultdict[tuple[str, str], SlidingWindow] = defaultdict(SlidingWindow)
        self.lock = threading.Lock()

    def admit(self, model: str, now: float, tokens: int, rps: int, tpm: int, tpm_window: float) -> Refusal | None:
        """Charge the call to every window and return ``None``, or refuse it and charge nothing."""
        checks = [
            (kind, cost, limit, length)
            for kind, cost, limit, length in (("rps", 1, rps, 1.0), ("tpm", tokens, tpm, tpm_window))
            if limit > 0
        ]
        with self.lock:
            for kind, cost, limit, length in checks:
                window = self.windows[model, kind]
                wait, used = window.wait(now, cost, limit, length)
                if wait > 0:
                    return Refusal(kind, max(1, math.ceil(wait)), used, cost, limit)
            for kind, cost, _, _ in checks:
                self.windows[model, kind].add(now, cost)
        return None

    def reset(self) -> None:
        with self.lock:
            self.windows.clear()
