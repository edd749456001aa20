"""The emulator's cache of the offline analyzer's rows: a text whose digits differ from one already seen
gets the row the analyzer gives it, traps included (VADER's "143" and "<3", the taxonomy's "2fa",
emojis)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from insights.analyzer import ConversationToAnalyze
from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from settings import load_settings
from testing.rows import RowCache

ANALYZER = OfflineAnalyzer(Taxonomy(dict(load_settings({}).taxonomy), closed=True))
CACHE = RowCache(ANALYZER, size=64)
WORDS = [
    "Order",
    "refund",
    "awful",
    "great",
    "not",
    "GREAT",
    "kind",
    "of",
    "password",
    "charged",
    "2fa",
    "2FA,",
    "143",
    "(143)",
    "86",
    "1337",
    "gr8",
    "<3",
    "</3",
    ":3",
    "8)",
    "0:)",
    "1:)",
    "n00b",
    "w00t",
    "aug-00",
    "hi5",
    "1️⃣",
    "🔟",
    "😀",
    "!",
    "?",
    "A1",
    "#",
    ":",
    "-",
    "'",
]
TOKENS = st.one_of(st.sampled_from(WORDS), st.integers(0, 99999).map(str))
TEXTS = st.lists(TOKENS, min_size=1, max_size=10).flatmap(
    lambda tokens: st.lists(st.sampled_from(["", " ", ", ", "! "]), min_size=len(tokens), max_size=len(tokens)).map(
        lambda gaps: "".join(token + gap for token, gap in zip(tokens, gaps))
    )
)


def conversation(*texts: str) -> dict:
    return {
        "conversation_id": "c1",
        "messages": [{"role": role, "content": text} for role, text in zip(("customer", "agent", "customer"), texts)],
    }


def expected(row_of: dict) -> dict:
    return ANALYZER.analyze_one(ConversationToAnalyze("c1", row_of["messages"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=3), st.data())
def test_a_text_with_other_digits_gets_its_own_row(texts, data):
    other_digits = [re.sub(r"[0-9]", lambda _: str(data.draw(st.integers(0, 9))), text) for text in texts]
    CACHE.row(conversation(*other_digits))  # seen first: its row is cached under the folded key
    probe = conversation(*texts)
    assert CACHE.row(probe) == expected(probe)


def test_templated_texts_share_a_key_and_traps_keep_their_own():
    assert CACHE.folded("Order 4812 arrived late, call 555-0199.") == "Order 0000 arrived late, call 000-0000."
    for text in ["I <3 it, order 12", "143 days", "my 2FA code 8812", "late 😀 order 12", "no digits"]:
        assert CACHE.folded(text) == text
