"""Store benchmark: how fast the workers' write path stores insights (``store.results.record_results``).

Accepts ``--conversations`` conversations over 30 days into a fresh SQLite file or PostgreSQL database,
then claims and stores them a batch of ``--batch`` at a time, as a worker does after a Grok call (one
transaction per batch: the insights, their daily rollups, the conversations' status), each insight
naming one or two of twelve clusters. Prints insights stored a second, the median of ``--rounds``
rounds (each round re-stores every insight: the replacements move rollup rows as reprocessing does), and
the CPU time of this process inside ``record_results`` per insight, median too (SQLite's engine runs in the
process, so it counts there; PostgreSQL's server does not).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timedelta

from benchmarks.harness import CLUSTERS, Run, add_database_options, postgres_server
from insights.schemas import AnalysisResult, InsightRow
from settings import load_settings
from store import claims, queries, results
from store.db import open_database
from store.migrations import migrate


def store_all(rng: random.Random, ids: list[str], batch: int) -> tuple[float, float]:
    """Claim and store every conversation, ``batch`` at a time; insights a second, and CPU milliseconds an
    insight spent in ``record_results``."""
    settings = load_settings({})  # the prices
    started, cpu = time.perf_counter(), 0.0
    for offset in range(0, len(ids), batch):
        chunk = ids[offset : offset + batch]
        claim = claims.claim_for_processing(chunk, max_attempts=1_000)
        rows = [
            InsightRow(
                conversation_id=i,
                sentiment_score=round(rng.uniform(-1, 1), 3),
                clusters=rng.sample(CLUSTERS, rng.choice((1, 2))),
                confidence=round(rng.uniform(0, 1), 3),
                reasoning="r",
            )
            for i in chunk
        ]
        result = AnalysisResult(
            conversation_ids=chunk,
            rows=rows,
            model="grok-4.3",
            prompt_version="p",
            raw_response="{}",
            usage={"prompt_tokens": 3000, "completion_tokens": 500},
            claim_token=claim.token,
        )
        cpu_started = time.process_time()
        results.record_results(result, max_retries=1_000, settings=settings)
        cpu += time.process_time() - cpu_started
    return len(ids) / (time.perf_counter() - started), cpu * 1000 / len(ids)


def rounds(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Accept the conversations, then store them ``args.rounds`` times; each round's rate and CPU."""
    rng = random.Random(1)
    start = datetime(2026, 1, 1)
    ids = [f"c{n:07d}" for n in range(args.conversations)]
    queries.insert_conversations(
        [
            queries.NewConversation.of(i, "{}", start, start + timedelta(seconds=rng.uniform(0, 30 * 86_400)))
            for i in ids
        ]
    )
    rates, cpu = [], []
    for _ in range(args.rounds):
        rate, cpu_ms = store_all(rng, ids, args.batch)
        rates.append(rate)
        cpu.append(cpu_ms)
        queries.reopen(ids)
    return rates, cpu


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    add_database_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-store-", redis=False, postgres=postgres_server(args)) as run:
        database = open_database(load_settings(run.env()))
        migrate(database)
        rates, cpu = rounds(args)
        database.close()
    print(
        f"database={args.database} conversations={args.conversations} batch={args.batch}: "
        f"{statistics.median(rates):,.0f} insights/s (median of {args.rounds}; rounds "
        f"{', '.join(f'{r:,.0f}' for r in rates)}), "
        f"CPU in record_results {statistics.median(cpu):.2f} ms an insight (rounds "
        f"{', '.join(f'{c:.2f}' for c in cpu)})"
    )


if __name__ == "__main__":
    main()
