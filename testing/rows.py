"""The offline analyzer's rows as the xAI emulator answers them, cached by conversation text.

VADER costs about 0.05 ms a message, 1 to 2 ms for a call of 20 conversations: at 500 calls a second,
a core. Benchmarks and soak runs send templated texts that differ in their numbers ("Order 4812 arrived
late"), so the cache keys a conversation by its messages with every ASCII digit read as ``0``. That key
gives the same row as the text itself: VADER and the taxonomy only see a digit through a word that holds
one ("143" and "<3" are in VADER's lexicon, "2fa" is a taxonomy keyword), and changing a digit for another
keeps every token's length, case and punctuation. So a text is folded only when no such word appears in it
before or after folding, and when it holds no emoji that VADER replaces with words (they could join a
digit to a word); otherwise its key is the text itself. ``tests/test_grok_rows.py`` checks the cache's rows
against the analyzer's.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from insights.analyzer import ConversationToAnalyze
from insights.offline import OfflineAnalyzer

CACHED_CONVERSATIONS = 16384  # rows kept, about 1.5 KB each
DIGIT = re.compile(r"[0-9]")


class RowCache:
    """Rows of ``analyzer`` (``analyze_one``) for conversations, by their folded texts."""

    def __init__(self, analyzer: OfflineAnalyzer, size: int = CACHED_CONVERSATIONS) -> None:
        vader = SentimentIntensityAnalyzer()
        self.analyzer = analyzer
        self.emojis = frozenset(vader.emojis)
        words = {word.lower() for word in vader.lexicon} | {
            word.lower() for words in analyzer.taxonomy.keywords.values() for word in words
        }
        self.words_with_digits = re.compile("|".join(re.escape(word) for word in sorted(words) if DIGIT.search(word)))
        self.size = size
        self.rows: OrderedDict[tuple[tuple[str, str], ...], dict[str, Any]] = OrderedDict()  # least recently used first
        self.lock = threading.Lock()  # the Batch API answers in threads of its own

    def row(self, conversation: dict[str, Any]) -> dict[str, Any]:
        """The analyzer's row for a conversation of the request (``conversation_id`` and ``messages``)."""
        messages = conversation["messages"]
        key = tuple((m["role"], self.folded(m["content"])) for m in messages)
        with self.lock:
            row = self.rows.get(key)
            if row is not None:
                self.rows.move_to_end(key)
        if row is None:
            row = self.analyzer.analyze_one(ConversationToAnalyze("", messages))
            with self.lock:
                self.rows[key] = row
                if len(self.rows) > self.size:
                    self.rows.popitem(last=False)
        return {**row, "conversation_id": conversation["conversation_id"]}

    def folded(self, text: str) -> str:
        """``text`` with its digits as ``0`` when that cannot change its row, else ``text`` as is."""
        if not DIGIT.search(text) or (not text.isascii() and any(c in self.emojis for c in text)):
            return text
        zeroed = DIGIT.sub("0", text)
        return text if self.words_with_digits.search(f"{text.lower()}\n{zeroed.lower()}") else zeroed
