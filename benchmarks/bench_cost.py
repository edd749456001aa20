"""Tokens and cost per conversation by batch size, real-time against the bulk lane.

Builds the real request of each batch (``GrokClient.request_body``: the system prompt and the batch as one
JSON document) for ``--conversations`` generated support conversations (2 to 8 messages, seeded:
``benchmarks.harness.conversations``), has the emulator's analyzer answer each batch (``testing.answers``:
the rows as Grok writes them), counts tokens as the emulator does (characters / 4: xAI's tokenizer is not
available offline, so absolute counts are estimates; the ratios between batch sizes are what the table is
for) and prices them with config.toml's ``[model_prices]``, each lane at its own rates. Batch size 1 is one
call per conversation.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.harness import conversations
from insights.analyzer import ConversationToAnalyze
from insights.costs import Tokens, cost_usd
from insights.grok import GrokClient
from insights.lanes import BULK, REALTIME
from insights.offline import OfflineAnalyzer
from insights.taxonomy import Taxonomy
from settings import load_settings
from testing.answers import batch_answer
from testing.rows import RowCache


def measure(client: GrokClient, rows: RowCache, sample: list[ConversationToAnalyze], size: int) -> Tokens:
    """The tokens of analyzing ``sample`` in batches of ``size``."""
    prompt = completion = 0
    for start in range(0, len(sample), size):
        answer, _error = batch_answer(rows, client.request_body(sample[start : start + size]))
        prompt += answer["usage"]["prompt_tokens"]
        completion += answer["usage"]["completion_tokens"]
    return Tokens(prompt, 0, completion)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--sizes", default="1,5,20,50")
    parser.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = load_settings({"GROK_API_KEY": "bench"})
    client, analyzer = GrokClient(settings, gate=None), OfflineAnalyzer(Taxonomy.of(settings))
    sample = conversations(args.conversations, args.seed)
    print(
        f"{args.conversations} conversations, {settings.grok_model}, prices "
        f"{settings.model_prices[settings.grok_model]}; "
        "tokens = characters / 4"
    )
    print()
    print(
        "| batch size | calls | prompt tokens / conversation | completion tokens / conversation | "
        "real-time $ / 1,000 | bulk $ / 1,000 | vs one call each (real-time) |"
    )
    print("|---|---|---|---|---|---|---|")
    baseline = None
    for size in [int(s) for s in args.sizes.split(",")]:
        per = measure(client, RowCache(analyzer), sample, size).divided(len(sample))
        realtime, bulk = (cost_usd(per, settings.grok_model, lane, settings) * 1000 for lane in (REALTIME, BULK))
        baseline = baseline or realtime
        calls = -(-len(sample) // size)
        print(
            f"| {size} | {calls} | {per.prompt:.0f} | {per.completion:.0f} | {realtime:.4f} | {bulk:.4f} | "
            f"{realtime / baseline:.0%} / bulk {bulk / baseline:.0%} |"
        )
    print()
    print(f"completion tokens of one answer row, for scale: {len(json.dumps(analyzer.analyze_one(sample[0]))) // 4}")


if __name__ == "__main__":
    main()
