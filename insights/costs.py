"""What an analysis costs: tokens from the answer's ``usage``, priced by ``[model_prices]`` of config.toml.

One call (or one Batch API request) analyzes a batch of conversations; its tokens are shared evenly among
them, and each insight records its share. The bulk lane pays ``BATCH_DISCOUNT`` less. A model missing from
the table is counted in tokens only: its cost is unknown (``None``), never a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from insights.lanes import BULK
from settings import Settings


@dataclass(frozen=True)
class Tokens:
    prompt: float = 0.0  # cached ones included, as xAI counts them
    cached: float = 0.0
    completion: float = 0.0

    def divided(self, parts: int) -> "Tokens":
        return Tokens(self.prompt / parts, self.cached / parts, self.completion / parts)


def tokens_of(usage: Any) -> Tokens | None:
    """The tokens of an (untrusted) ``usage`` object, or ``None`` when it reports none; counts that are not
    non-negative integers are taken as 0."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    prompt, completion = count(usage.get("prompt_tokens")), count(usage.get("completion_tokens"))
    cached = min(prompt, count(details.get("cached_tokens"))) if isinstance(details, dict) else 0
    if not (prompt or completion):
        return None
    return Tokens(prompt, cached, completion)


def cost_usd(tokens: Tokens, model: str, lane: str, settings: Settings) -> float | None:
    """The price of ``tokens`` of ``model`` in ``lane``, or ``None`` when the model has no price."""
    price = settings.model_prices.get(model)
    if price is None:
        return None
    full = ((tokens.prompt - tokens.cached) * price.input + tokens.cached * price.cached_input
            + tokens.completion * price.output) / 1_000_000
    return full * (1 - settings.batch_discount) if lane == BULK else full


class CountedBatch(Protocol):
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


def batch_cost(batch: CountedBatch, settings: Settings) -> float | None:
    """A provider batch's cost so far (the results collected), at the configured model's price."""
    tokens = Tokens(batch.prompt_tokens, batch.cached_tokens, batch.completion_tokens)
    return cost_usd(tokens, settings.grok_model, BULK, settings)
