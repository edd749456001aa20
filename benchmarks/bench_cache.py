"""Prompt caching at steady state: the cached share of prompt tokens and the cost per 1,000 conversations,
with and without the ``x-grok-conv-id`` header, against the emulator's per-server prompt cache.

Starts ``testing.emulator`` (``--cache-servers``, ``--cache-span``: ``testing/prompt_cache.py``) and sends it
``--conversations`` generated support conversations (``benchmarks.harness.conversations``) in calls of
``BATCH_SIZE``, built by the real client (``GrokClient.request_body`` and ``GrokClient.headers``), one call
at a time: once as configured (the header on), once with ``GROK_CACHE_ROUTING=false``, and once with the
emulator's cache off (nothing cached: the price without caching). The caches are emptied before each run,
and the first ``--warm-up`` calls of each are left out of the figures. Tokens are the emulator's
(characters / 4), priced with ``[model_prices]`` of config.toml for ``GROK_MODEL``, real-time lane, and
beside that what the emulator billed (``cost_in_usd_ticks``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import httpx

from benchmarks.harness import HOST, KEY, Run, conversations
from insights.costs import Tokens, cost_usd
from insights.grok import GrokClient
from insights.lanes import REALTIME
from settings import Settings, load_settings

UNROUTED = {"GROK_CACHE_ROUTING": "false"}
RUNS = (
    ("with the header", {}, True),
    ("without the header", UNROUTED, True),
    ("no cache (the emulator's off)", UNROUTED, False),
)


@dataclass
class Figures:
    """What one run measured, summed over its calls after the warm-up."""

    name: str
    conversations: int = 0
    calls: int = 0
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    ticks: int = 0  # what the emulator billed (cost_in_usd_ticks, 1e-10 USD)

    def add(self, usage: dict, conversations: int) -> None:
        self.calls, self.conversations = self.calls + 1, self.conversations + conversations
        self.prompt += usage["prompt_tokens"]
        self.cached += usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        self.completion += usage["completion_tokens"]
        self.ticks += usage.get("cost_in_usd_ticks", 0)

    def row(self, settings: Settings) -> str:
        priced = cost_usd(Tokens(self.prompt, self.cached, self.completion), settings.grok_model, REALTIME, settings)
        thousands = self.conversations / 1000
        return (
            f"| {self.name} | {self.calls} | {self.prompt / self.conversations:.0f} | "
            f"{self.cached / self.prompt:.1%} | "
            f"{priced / thousands:.4f} | {self.ticks / 1e10 / thousands:.4f} |"
        )


def measure(base_url: str, client: GrokClient, args: argparse.Namespace, name: str) -> Figures:
    """Send the sample through ``client``'s requests; the figures of the calls after the warm-up."""
    sample, size, figures = conversations(args.conversations, args.seed), client_batch_size(args), Figures(name)
    with httpx.Client(base_url=base_url, headers=client.headers(), timeout=60) as http:
        for number, start in enumerate(range(0, len(sample), size)):
            batch = sample[start : start + size]
            answer = http.post("/chat/completions", json=client.request_body(batch))
            answer.raise_for_status()
            if number >= args.warm_up:
                figures.add(answer.json()["usage"], len(batch))
    return figures


def client_batch_size(args: argparse.Namespace) -> int:
    return args.batch_size or load_settings({}).batch_size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=0, help="conversations per call (0: BATCH_SIZE)")
    parser.add_argument("--warm-up", type=int, default=20, help="calls of each run left out of the figures")
    parser.add_argument("--cache-servers", type=int, default=16)
    parser.add_argument("--cache-span", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=8597)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    base_url, control = f"http://{HOST}:{args.port}/v1", f"http://{HOST}:{args.port}/_emulator"
    settings = load_settings({"GROK_API_KEY": KEY})
    runs = []
    with Run("bench-cache-", redis=False) as emulated:
        emulated.start_emulator(
            args.port, "--cache-servers", str(args.cache_servers), "--cache-span", str(args.cache_span)
        )
        for name, env, cache in RUNS:
            httpx.post(f"{control}/reset").raise_for_status()
            httpx.post(f"{control}/config", json={"cache_span": args.cache_span if cache else 0}).raise_for_status()
            runs.append(
                measure(base_url, GrokClient(load_settings({"GROK_API_KEY": KEY, **env}), gate=None), args, name)
            )
    print(
        f"{args.conversations} conversations in calls of {client_batch_size(args)}, first {args.warm_up} calls left "
        "out; "
        f"{args.cache_servers} emulated servers, a prefix evicted after {args.cache_span} calls unused; "
        f"{settings.grok_model} at {settings.model_prices[settings.grok_model].realtime}; tokens = characters / 4"
    )
    print()
    print(
        "| run | calls measured | prompt tokens / conversation | cached share of prompt tokens | "
        "$ / 1,000 conversations (config.toml) | billed by the emulator |"
    )
    print("|---|---|---|---|---|---|")
    for figures in runs:
        print(figures.row(settings))


if __name__ == "__main__":
    main()
