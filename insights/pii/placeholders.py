"""Placeholders: ``[KIND_N]``, numbered per kind in the order values first appear in a conversation."""

from __future__ import annotations

from collections import Counter


class Placeholders:
    """The placeholders of one conversation: the same value gets the same placeholder in every message."""

    def __init__(self) -> None:
        self._given: dict[tuple[str, str], str] = {}
        self._numbers: Counter[str] = Counter()

    def of(self, kind: str, value: str) -> str:
        key = (kind, value)
        if key not in self._given:
            self._numbers[kind] += 1
            self._given[key] = f"[{kind}_{self._numbers[kind]}]"
        return self._given[key]

    @property
    def counts(self) -> Counter[str]:
        """Distinct values masked, by kind."""
        return Counter(self._numbers)
