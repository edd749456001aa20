"""What an analysis costs: what xAI billed, or else its tokens priced by ``[model_prices]`` of config.toml.

Every answer's ``usage`` reports ``cost_in_usd_ticks`` (1 tick = 1e-10 USD), "the actual amount billed,
after all applicable discounts (including prompt caching reductions)" (docs.x.ai, cost tracking), for a
real-time call and a Batch API result alike: that is the cost. The price table is the fallback for an
answer that reports none, priced by the model that answered and the lane (the Batch API's own rates).

One call (or one Batch API request) analyzes a batch of conversations; its tokens and cost are shared
evenly among them, and each insight records its share. A cost that is not known is ``None``, never a
made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from insights.lanes import BULK
from insights.models import canonical
from settings import Settings

TICKS_PER_USD = 10_000_000_000


@dataclass(frozen=True)
class Tokens:
    prompt: float = 0.0  # cached ones included, as xAI counts them
    cached: float = 0.0
    completion: float = 0.0  # reasoning tokens not included (xAI counts them apart)
    reasoning: float = 0.0
    billed_usd: float | None = None  # what xAI reported it billed, when it did

    def divided(self, parts: int) -> Tokens:
        billed = self.billed_usd / parts if self.billed_usd is not None else None
        return Tokens(self.prompt / parts, self.cached / parts, self.completion / parts, self.reasoning / parts, billed)


def _count(value: Any) -> int:
    """An untrusted count: a non-negative integer, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def tokens_of(usage: Any) -> Tokens | None:
    """The tokens and billed cost of an (untrusted) ``usage`` object, or ``None`` when it reports none;
    counts that are not non-negative integers are taken as 0, a cost that is not one as not reported."""
    if not isinstance(usage, dict):
        return None
    prompt_details, completion_details = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    cached = min(prompt, _count(prompt_details.get("cached_tokens"))) if isinstance(prompt_details, dict) else 0
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    ticks = usage.get("cost_in_usd_ticks")
    billed = ticks / TICKS_PER_USD if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0 else None
    if not (prompt or completion) and billed is None:
        return None
    return Tokens(prompt, cached, completion, reasoning, billed)


def cost_usd(tokens: Tokens, model: str, lane: str, settings: Settings) -> float | None:
    """What ``tokens`` cost: what xAI billed for them, or else their price for ``model`` (the model that
    answered) in ``lane``; ``None`` when neither is known."""
    if tokens.billed_usd is not None:
        return tokens.billed_usd
    price = settings.model_prices.get(canonical(model, settings))  # a retired slug is billed as its successor
    rates = (price.batch if lane == BULK else price.realtime) if price else None
    if rates is None:
        return None
    return (
        (tokens.prompt - tokens.cached) * rates.input
        + tokens.cached * rates.cached_input
        + (tokens.completion + tokens.reasoning) * rates.output
    ) / 1_000_000


class BilledBatch(Protocol):
    cost_usd: float
    unpriced_results: int


def batch_cost(batch: BilledBatch) -> float | None:
    """A provider batch's cost so far (the results collected), ``None`` while no result's cost is known."""
    return batch.cost_usd if batch.cost_usd or not batch.unpriced_results else None
