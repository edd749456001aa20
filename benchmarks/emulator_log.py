"""Figures read from the xAI emulator's call log (``GET /_emulator/log``): what the benchmarks report of
the calls the service made, on the server's clock."""

from __future__ import annotations


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most ``times`` in any ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def seconds_to_full_rate(log: list[dict], started: float, limit: int) -> str:
    """How long after ``started`` the calls first reached 95 % of ``limit`` in a one-second window."""
    arrivals = sorted(entry["t"] for entry in log if entry["t"] >= started)
    for end, t in enumerate(arrivals):
        begin = next(i for i in range(end + 1) if t - arrivals[i] < 1.0)
        if end - begin + 1 >= 0.95 * limit:
            return f"{t - started:.1f}"
    return "never"


def tokens_per_minute(log: list[dict], first: float, last: float) -> float:
    """The tokens of the calls admitted between ``first`` and ``last``, a minute."""
    admitted = sum(e.get("tokens") or 0 for e in log if e.get("refused") is None and first <= e["t"] <= last)
    return admitted * 60 / (last - first)
