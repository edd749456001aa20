"""The masker: a conversation's messages with their personal data replaced by placeholders.

Recognisers run in a fixed order: the operator's patterns (``[pii_patterns]``: they say what they mean),
then e-mails, IBANs, cards, SSNs, IPs and phones last (a card or an IBAN is also a long run of digits); a
span that overlaps one found before it is dropped. The built-in ones run only on a text with a digit, an
``@`` or a colon: most messages of a support chat have none, and cost one regular-expression search.
Masking is part of the prompt version (:attr:`Masker.version`): an insight says whether its conversation
was masked, and by which patterns.

A recogniser that raises fails the conversation (:class:`MaskingFailed`), never sends it unmasked; the
error names the recogniser and the exception's class, never the text (it may hold what was to be masked).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from insights.conversation import ConversationToAnalyze
from insights.pii.placeholders import Placeholders
from insights.pii.recognisers import BUILT_IN, BUILT_IN_NEED, Recogniser, Span, pattern_finder, phone_finder
from settings import Settings

RECOGNISERS_VERSION = "1"  # raise when a recogniser changes what it masks: it changes the prompt version


class MaskingFailed(Exception):
    """A recogniser raised: the conversation cannot be sent."""


@dataclass
class Masked:
    """A batch's conversations as they may be sent, those whose masking failed (id -> reason), and the
    items masked by kind."""

    conversations: list[ConversationToAnalyze]
    failed: dict[str, str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)


class Masker:
    """Masks conversations with its recognisers (none when masking is off)."""

    def __init__(self, recognisers: Iterable[Recogniser], version: str, patterns: Iterable[Recogniser] = ()) -> None:
        self.recognisers = tuple(recognisers)  # the built-in ones, which need a digit, an @ or a colon
        self.patterns = tuple(patterns)  # the operator's, which may find anything
        self.version = version  # "" when off: what was sent before masking existed

    @classmethod
    def of(cls, settings: Settings) -> Masker:
        if settings.pii_masking == "off":
            return UNMASKED
        regions = tuple(region.strip() for region in settings.pii_phone_regions.split(","))
        patterns = [pattern_finder(name, pattern) for name, pattern in sorted(settings.pii_patterns.items())]
        described = json.dumps([RECOGNISERS_VERSION, regions, sorted(settings.pii_patterns.items())])
        version = "pii" + hashlib.sha256(described.encode()).hexdigest()[:6]
        return cls((*BUILT_IN, phone_finder(regions)), version, patterns)

    def versioned(self, prompt_version: str) -> str:
        """An analyzer's prompt version, marked with this masker's when masking is on."""
        return f"{prompt_version}-{self.version}" if self.version else prompt_version

    @property
    def on(self) -> bool:
        return bool(self.recognisers or self.patterns)

    def text(self, text: str, placeholders: Placeholders, counts: Counter[str]) -> str:
        """``text`` with every span found replaced by its placeholder; ``counts`` counts them by kind."""
        spans = self.spans(text)
        pieces, end = [], 0
        for span in spans:
            pieces += [text[end : span.start], placeholders.of(span.kind, span.value)]
            counts[span.kind] += 1
            end = span.end
        return "".join(pieces) + text[end:]

    def spans(self, text: str) -> list[Span]:
        """The spans to replace, in order, none overlapping an earlier recogniser's."""
        taken: list[Span] = []
        built_in = self.recognisers if BUILT_IN_NEED.search(text) else ()
        for recogniser in (*self.patterns, *built_in):
            try:
                found = list(recogniser(text))
            except Exception as error:
                raise MaskingFailed(
                    f"masking failed: the {recogniser.__name__} recogniser raised "
                    f"{type(error).__name__}; the conversation was not sent"
                ) from None
            taken += [s for s in found if not any(s.start < t.end and t.start < s.end for t in taken)]
        return sorted(taken)

    def messages(self, messages: list[dict[str, Any]], counts: Counter[str]) -> list[dict[str, Any]]:
        """A conversation's messages as they are sent: role and content, the content masked."""
        placeholders = Placeholders()
        return [
            {"role": m["role"], "content": self.text(m["content"], placeholders, counts) if self.on else m["content"]}
            for m in messages
        ]

    def batch(self, conversations: list[ConversationToAnalyze]) -> Masked:
        """Mask each conversation on its own: one whose masking fails is set apart with the reason."""
        masked = Masked([])
        for conversation in conversations:
            counts: Counter[str] = Counter()
            try:
                messages = self.messages(conversation.messages, counts)
            except MaskingFailed as error:
                masked.failed[conversation.conversation_id] = str(error)
                continue
            masked.conversations.append(ConversationToAnalyze(conversation.conversation_id, messages))
            masked.counts.update(counts)
        return masked


UNMASKED = Masker((), "")  # PII_MASKING=off: conversations go as they came
