"""Which model answers: xAI's retired slugs and aliases, and the model an answer names.

xAI retired several slugs on 2026-05-15; they still resolve, but are served and billed as another model
(``[retired_models]`` in config.toml). An answer names the model that produced it, which is what an
insight records and what its cost is priced by when xAI reports no billed cost. When that model is not
the one ``GROK_MODEL`` asks for (an alias aside), the operator should know: :class:`ModelWatch` counts
each (asked, answered) pair in Redis, for ``insights stats`` and ``/metrics``, and logs it once a process.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import redis

from settings import Settings

logger = logging.getLogger(__name__)
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")  # what an answer's model may be (it is stored)
PAIR_SEPARATOR = " -> "


def canonical(model: str, settings: Settings) -> str:
    """The model that serves ``model``: itself, or what a retired slug or an alias resolves to."""
    return settings.retired_models.get(model) or settings.model_aliases.get(model) or model


def retirement_warning(settings: Settings) -> str | None:
    """What to tell the operator at start-up when ``GROK_MODEL`` is a retired slug, or ``None``."""
    asked = settings.grok_model
    served = settings.retired_models.get(asked)
    if served is None:
        return None
    price = settings.model_prices.get(served)
    billed = (
        (
            f" and bills {served}'s prices (${price.realtime.input:.2f} input, ${price.realtime.output:.2f} output "
            "per million tokens)"
        )
        if price
        else ""
    )
    return (
        f"GROK_MODEL={asked} was retired by xAI on 2026-05-15: xAI serves it with {served}{billed}, not the "
        f"retired model's; set GROK_MODEL={served} (see config.toml, [retired_models])"
    )


def answering_model(document: Any, asked: str) -> str:
    """The model an (untrusted) answer names, when it names one that can be stored; else ``asked``."""
    named = document.get("model") if isinstance(document, dict) else None
    return named if isinstance(named, str) and MODEL_NAME.fullmatch(named) else asked


class ModelWatch:
    """Counts answers by a model other than the one asked for, shared by every process through Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.key = f"{settings.redis_namespace}:grok:answered-by"
        self.logged: set[tuple[str, str]] = set()

    def note(self, answered: str) -> None:
        """Count an answer by ``answered``, if it is not the model ``GROK_MODEL`` names (or an alias of it)."""
        asked, aliases = self.settings.grok_model, self.settings.model_aliases
        if aliases.get(answered, answered) == aliases.get(asked, asked):
            return
        self.client.hincrby(self.key, f"{asked}{PAIR_SEPARATOR}{answered}", 1)
        if (asked, answered) not in self.logged:
            self.logged.add((asked, answered))
            logger.warning(
                "Grok answered with %s, not GROK_MODEL=%s: insights record %s, and are priced as it",
                answered,
                asked,
                answered,
            )

    def seen(self) -> dict[tuple[str, str], int]:
        """Answers by another model than the one asked for, by (asked, answered)."""
        return {
            tuple(pair.decode().split(PAIR_SEPARATOR, 1)): int(count)  # type: ignore[misc]
            for pair, count in self.client.hgetall(self.key).items()
        }
