"""The xAI emulator's settings (``testing.emulator``): its command line, and what ``POST /_emulator/config``
may change while it runs."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any

# How a refusal for exhausted credits is shaped (docs/xai-today.md, section 6): its message as a bare JSON
# string, as {"error": message}, or as xAI's usual {"code": ..., "error": message}; "" for credits available.
CREDITS_SHAPES = ("", "string", "error", "code")


CHOICES = {
    "batch_error_shape": ("string", "object", "empty"),
    "batch_page_end": ("null", "empty", "absent", "endless"),
    "credits": CREDITS_SHAPES,
}


@dataclass
class EmulatorConfig:
    """The emulator's settings: from the command line, changed by ``POST /_emulator/config``."""

    api_key: str = "emulator-key"
    latency: float = 0.0
    latency_median: float = 0.0
    latency_sigma: float = 0.0
    latency_max: float = 0.0
    seed: int = 42
    fault_rate: float = 0.0
    rps: int = 0
    tpm: int = 0
    tpm_window: float = 60.0
    context: int = 131072
    models: list[str] = field(default_factory=list)
    refusal_status: int = 403
    batch_delay: float = 0.0  # seconds a Batch API request takes (see testing/batches.py)
    batch_expiry: float = 0.0  # seconds after which a batch expires, its pending requests cancelled (0: never)
    batch_error: str = ""  # when set, every batch's state reports this error and its pending requests stay pending
    batch_refusal: str = ""  # when set, xAI refuses every batch holding requests outright: its cancel_by_xai_message
    batch_error_shape: str = "string"  # a failed request's result: string, object or empty (testing/batches.py)
    batch_page_end: str = "null"  # the last page's pagination_token: null, empty, absent, or endless
    batch_max_add_bytes: int = 25_000_000  # the largest add-requests body taken (xAI: 25 MB a request); larger: 413
    log_limit: int = 100_000  # calls the log keeps, the latest (about 2 KB each; 0: every call)
    credits: str = ""  # exhausted credits, answered in this shape (CREDITS_SHAPES); "": credits available
    credits_status: int = 429  # the status of that refusal (429 as in early 2026, 403 as seen later)
    cache_servers: int = 16  # servers whose prompt caches calls are spread over (see testing/prompt_cache.py)
    cache_span: int = 8  # a cached prefix no call used during this many calls is evicted (0: no cache)

    def update(self, changes: dict[str, Any]) -> None:
        """Set each named setting, converted to its type; raises ``ValueError`` on an unknown name."""
        names = {f.name for f in fields(self)}
        for name, value in changes.items():
            if name not in names:
                raise ValueError(f"unknown setting {name!r}")
            current = getattr(self, name)
            value = parse_models(value) if isinstance(current, list) else type(current)(value)
            if name in CHOICES and value not in CHOICES[name]:
                raise ValueError(f"{name} must be one of {', '.join(CHOICES[name])}")
            setattr(self, name, value)


def parse_models(value: str | list[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]``; empty means any model."""
    return [m for m in (value.split(",") if isinstance(value, str) else value) if m]


def parse_args(description: str) -> argparse.Namespace:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--api-key", default=defaults.api_key)
    parser.add_argument("--latency", type=float, default=defaults.latency, help="fixed seconds before each answer")
    parser.add_argument(
        "--latency-median",
        type=float,
        default=defaults.latency_median,
        help="median of a lognormal latency added (0: none)",
    )
    parser.add_argument(
        "--latency-sigma", type=float, default=defaults.latency_sigma, help="shape of that lognormal (0.5: a long tail)"
    )
    parser.add_argument("--latency-max", type=float, default=defaults.latency_max, help="cap on the latency (0: none)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the latency and random-fault draws")
    parser.add_argument(
        "--rps", type=int, default=defaults.rps, help="calls admitted in any second, per model (0: no limit)"
    )
    parser.add_argument(
        "--tpm", type=int, default=defaults.tpm, help="tokens admitted in any --tpm-window, per model (0: no limit)"
    )
    parser.add_argument(
        "--tpm-window", type=float, default=defaults.tpm_window, help="seconds of the tokens-per-minute window"
    )
    parser.add_argument("--context", type=int, default=defaults.context, help="most prompt tokens a call may have")
    parser.add_argument(
        "--models", type=parse_models, default=defaults.models, help="comma-separated models served (default: any)"
    )
    parser.add_argument(
        "--log-limit", type=int, default=defaults.log_limit, help="calls kept in the log, the latest (0: all)"
    )
    parser.add_argument(
        "--cache-servers", type=int, default=defaults.cache_servers, help="servers with a prompt cache each"
    )
    parser.add_argument(
        "--cache-span",
        type=int,
        default=defaults.cache_span,
        help="calls after which an unused cached prefix is evicted (0: no cache)",
    )
    parser.add_argument(
        "--refusal-status",
        type=int,
        choices=(400, 403),
        default=defaults.refusal_status,
        help="status of a content refusal",
    )
    parser.add_argument(
        "--credits",
        choices=CREDITS_SHAPES,
        default=defaults.credits,
        help="answer every call as a team out of credits, in this body shape (default: credits available)",
    )
    parser.add_argument(
        "--credits-status", type=int, choices=(403, 429), default=defaults.credits_status, help="status of that refusal"
    )
    return parser.parse_args()
