"""The xAI emulator's models: which model serves a slug, how much it reasons, and what xAI bills for it.

As docs.x.ai describes them (read 2026-12-07): the slugs retired on 2026-05-15 still resolve, served by
``grok-4.3`` (``grok-code-fast-1`` by ``grok-build-0.1``), the reasoning ones with effort ``low``, the others
with ``none``; an answer names the model that served it. Every answer's ``usage`` reports what it billed in
``cost_in_usd_ticks`` (1e-10 USD): prompt tokens not cached at the input price, cached ones at the cached
price, completion and reasoning tokens at the output price; the Batch API bills 20 % off for the models it
takes. Reasoning tokens are counted apart from ``completion_tokens``, as xAI counts them.

This is the emulator's own table, kept apart from the service's ``[model_prices]`` on purpose: it plays
xAI, and a test compares what the service reports with what the emulator billed.
"""

from __future__ import annotations

from typing import Any

TICKS_PER_USD = 10_000_000_000
BATCH_DISCOUNT = 0.2

# model -> (input, cached input, output) in USD per million tokens, and whether the Batch API takes it
PRICES: dict[str, tuple[tuple[float, float, float], bool]] = {
    "grok-4.3": ((1.25, 0.20, 2.50), True),
    "grok-4.20-0309-non-reasoning": ((1.25, 0.20, 2.50), True),
    "grok-4.20-0309-reasoning": ((1.25, 0.20, 2.50), True),
    "grok-4.5": ((2.00, 0.30, 6.00), False),
    "grok-4.6": ((2.00, 0.50, 6.00), False),
    "grok-4.7": ((2.00, 0.50, 6.00), False),
    "grok-build-0.1": ((1.00, 0.20, 2.00), False),
}
RETIRED = {  # slug -> (the model serving it, its reasoning effort)
    **{slug: ("grok-4.3", "low") for slug in ("grok-4-fast-reasoning", "grok-4-1-fast-reasoning", "grok-4-0709")},
    **{
        slug: ("grok-4.3", "none")
        for slug in ("grok-4-fast-non-reasoning", "grok-4-1-fast-non-reasoning", "grok-3", "grok-3-mini")
    },
    "grok-code-fast-1": ("grok-build-0.1", "low"),
}
ALIASES = {
    "grok-4.3-latest": "grok-4.3",
    "grok-4.20-non-reasoning": "grok-4.20-0309-non-reasoning",
    "grok-4.20-reasoning": "grok-4.20-0309-reasoning",
    "grok-4.20": "grok-4.20-0309-reasoning",
}
DEFAULT_EFFORT = {
    "grok-4.3": "low",
    "grok-4.20-0309-reasoning": "low",
    "grok-4.5": "high",
    "grok-4.6": "high",
    "grok-4.7": "high",
    "grok-build-0.1": "low",
}
REASONING_PER_OUTPUT = {"none": 0, "low": 1, "medium": 2, "high": 4, "xhigh": 8}  # reasoning tokens per output token


def served(model: str, effort: str | None) -> tuple[str, str]:
    """The model that answers a request for ``model`` with ``effort`` (``None``: not given), and the effort
    it reasons with."""
    if model in RETIRED:
        return RETIRED[model]
    name = ALIASES.get(model, model)
    return name, effort or DEFAULT_EFFORT.get(name, "none")


def usage(model: str, prompt: int, cached: int, completion: int, effort: str, batch: bool) -> dict[str, Any]:
    """An answer's ``usage``, its cost in ticks as xAI bills ``model`` (in the Batch API when ``batch``)."""
    reasoning = completion * REASONING_PER_OUTPUT.get(effort, 0)
    (rate_in, rate_cached, rate_out), _takes_batch = PRICES.get(model, ((0.0, 0.0, 0.0), False))
    usd = ((prompt - cached) * rate_in + cached * rate_cached + (completion + reasoning) * rate_out) / 1_000_000
    if batch:
        usd *= 1 - BATCH_DISCOUNT
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion + reasoning,
        "prompt_tokens_details": {"text_tokens": prompt, "cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "cost_in_usd_ticks": round(usd * TICKS_PER_USD),
    }
