"""How many tokens a Grok call will use, before it is made: what the shared gate reserves."""

from __future__ import annotations

import math
from typing import Any


class UsageEstimate:
    """How many tokens a call will use, learned from the ``usage`` of recent answers (in this process).

    Prompt tokens follow the request's characters, completion tokens the number of conversations; both
    rates are moving averages, starting from four characters a token and from the most a conversation
    may use (``GROK_OUTPUT_TOKENS_PER_CONVERSATION``), so the first calls err on the safe side.
    """

    WEIGHT = 0.2  # of the newest observation in the moving averages
    SAFETY = 1.1  # reserve a little more than expected: an under-estimate costs a 429

    def __init__(self, completion_per_conversation: int) -> None:
        self.prompt_tokens_per_char = 0.25
        self.completion_per_conversation = float(completion_per_conversation)

    def estimate(self, prompt_chars: int, conversations: int) -> int:
        expected = prompt_chars * self.prompt_tokens_per_char + conversations * self.completion_per_conversation
        return math.ceil(expected * self.SAFETY)

    def learn(self, prompt_chars: int, conversations: int, usage: dict[str, Any]) -> None:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and prompt_chars:
            self.prompt_tokens_per_char += self.WEIGHT * (prompt / prompt_chars - self.prompt_tokens_per_char)
        if isinstance(completion, int) and conversations:
            self.completion_per_conversation += self.WEIGHT * (
                completion / conversations - self.completion_per_conversation
            )
