"""Tokens and cost per conversation by batch size, real-time against the bulk lane.

Builds the real request of each batch (``GrokClient.request_body``: the system prompt and the batch as one
JSON document) for ``--conversations`` generated support conversations (2 to 8 messages, seeded), has the
emulator's analyzer answer each batch (``testing.answers``: the rows as Grok writes them), counts tokens
as the emulator does (characters / 4: xAI's tokenizer is not available offline, so absolute counts are
estimates; the ratios between batch sizes are what the table is for) and prices them with config.toml's
``[model_prices]``, each lane at its own rates. Batch size 1 is one call per conversation.
"""

from __future__ import annotations

import argparse
import json
import random

from insights.analyzer import ConversationToAnalyze
from insights.costs import Tokens, cost_usd
from insights.grok import GrokClient
from insights.lanes import BULK, REALTIME
from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from testing.answers import batch_answer
from testing.rows import RowCache
from settings import load_settings

OPENINGS = ["I was charged twice for my subscription this month", "My parcel says delivered but nothing arrived",
            "I can't log in since the last update, it says my password is wrong", "The app crashes when I open settings",
            "Please cancel my account and stop all payments", "I'd love a dark mode, the white screen hurts at night",
            "The blender I received is damaged, I want to return it"]
FOLLOW_UPS = ["Thanks for getting back to me.", "That still doesn't work.", "Can you check again? Order number is 48213.",
              "I've been waiting for a week now.", "OK, that fixed it, thank you!", "This is the third time I'm writing."]
REPLIES = ["Sorry about that, let me look into it.", "I've issued a refund, it takes 3-5 business days.",
           "Could you send a screenshot of the error?", "I've escalated this to our technical team."]


def conversations(count: int, seed: int) -> list[ConversationToAnalyze]:
    draw = random.Random(seed)
    made = []
    for n in range(count):
        messages = [{"role": "customer", "content": draw.choice(OPENINGS)}]
        for turn in range(draw.randint(1, 7)):
            role, pool = ("agent", REPLIES) if turn % 2 == 0 else ("customer", FOLLOW_UPS)
            messages.append({"role": role, "content": draw.choice(pool)})
        made.append(ConversationToAnalyze(f"conv_{n:06d}", messages))
    return made


def measure(client: GrokClient, rows: RowCache, sample: list[ConversationToAnalyze], size: int) -> Tokens:
    """The tokens of analyzing ``sample`` in batches of ``size``."""
    prompt = completion = 0
    for start in range(0, len(sample), size):
        answer, _error = batch_answer(rows, client.request_body(sample[start:start + size]))
        prompt += answer["usage"]["prompt_tokens"]
        completion += answer["usage"]["completion_tokens"]
    return Tokens(prompt, 0, completion)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--sizes", default="1,5,20,50")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = load_settings({"GROK_API_KEY": "bench"})
    client, analyzer = GrokClient(settings, gate=None), OfflineAnalyzer(Taxonomy.of(settings))
    sample = conversations(args.conversations, args.seed)
    print(f"{args.conversations} conversations, {settings.grok_model}, prices {settings.model_prices[settings.grok_model]}; "
          "tokens = characters / 4")
    print()
    print("| batch size | calls | prompt tokens / conversation | completion tokens / conversation | "
          "real-time $ / 1,000 | bulk $ / 1,000 | vs one call each (real-time) |")
    print("|---|---|---|---|---|---|---|")
    baseline = None
    for size in [int(s) for s in args.sizes.split(",")]:
        per = measure(client, RowCache(analyzer), sample, size).divided(len(sample))
        realtime, bulk = (cost_usd(per, settings.grok_model, lane, settings) * 1000 for lane in (REALTIME, BULK))
        baseline = baseline or realtime
        calls = -(-len(sample) // size)
        print(f"| {size} | {calls} | {per.prompt:.0f} | {per.completion:.0f} | {realtime:.4f} | {bulk:.4f} | "
              f"{realtime / baseline:.0%} / bulk {bulk / baseline:.0%} |")
    print()
    print(f"completion tokens of one answer row, for scale: {len(json.dumps(analyzer.analyze_one(sample[0]))) // 4}")


if __name__ == "__main__":
    main()
