"""Bulk import benchmark: ``insights import`` into SQLite, beside a bare ``sqlite3`` baseline.

Writes ``--conversations`` JSON lines (two messages and metadata each, like the ingress benchmark), then
per round imports them into a fresh SQLite database through the real code path (``cli.load.import_source``:
pydantic validation, canonical payload, one multi-row insert per 1,000, one ``collect_many`` message per
1,000 on an embedded Redis) and, as the baseline, inserts the same lines with ``sqlite3.executemany`` in
1,000-row transactions and no validation. Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from benchmarks.harness import Run, body
from cli import load
from settings import load_settings
from store.db import open_database
from store.migrations import migrate


def write_source(path: Path, count: int) -> None:
    with open(path, "wb") as out:
        for n in range(count):
            out.write(body(n) + b"\n")


def baseline(source: Path, database: Path) -> float:
    """Seconds to insert every line as-is with the standard library."""
    started = time.perf_counter()
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=wal")
    connection.execute("PRAGMA synchronous=full")
    connection.execute("CREATE TABLE conversations (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
    with open(source, "rb") as lines:
        chunk = []
        for n, line in enumerate(lines):
            chunk.append((f"c{n}", line.decode()))
            if len(chunk) == 1000:
                connection.execute("BEGIN")
                connection.executemany("INSERT INTO conversations VALUES (?, ?)", chunk)
                connection.execute("COMMIT")
                chunk = []
    connection.close()
    return time.perf_counter() - started


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    return parser


def rounds(scratch: Path, source: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Seconds of each round: importing ``source`` through ``insights import``, and the baseline."""
    ours, bare = [], []
    for round_number in range(args.rounds):
        database = scratch / f"import-{round_number}.db"
        settings = load_settings({**os.environ, "DB_PATH": str(database)})
        migrate(open_database(settings))
        started = time.perf_counter()
        tally = load.import_source(settings, str(source), "bulk", progress=False)
        ours.append(time.perf_counter() - started)
        assert tally["created"] == args.conversations, tally
        bare.append(baseline(source, scratch / f"baseline-{round_number}.db"))
        print(
            f"round {round_number + 1}: import {args.conversations / ours[-1]:,.0f}/s, "
            f"baseline {args.conversations / bare[-1]:,.0f}/s",
            file=sys.stderr,
        )
    return ours, bare


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-import-") as run:
        source = run.directory / "conversations.jsonl"
        write_source(source, args.conversations)
        os.environ.update(REDIS_URL=run.redis_url, DB_PATH=str(run.directory / "unused.db"))
        ours, bare = rounds(run.directory, source, args)
    import_rate = args.conversations / statistics.median(ours)
    baseline_rate = args.conversations / statistics.median(bare)
    print(f"conversations={args.conversations} rounds={args.rounds} cpus={os.cpu_count()}")
    print()
    print("| path | conversations/s (median) |")
    print("|---|---|")
    print(f"| insights import (validate, canonicalise, insert, enqueue) | {import_rate:,.0f} |")
    print(f"| bare sqlite3 executemany of the raw lines | {baseline_rate:,.0f} |")
    print(f"\nimport / baseline: {import_rate / baseline_rate:.2f}")


if __name__ == "__main__":
    main()
