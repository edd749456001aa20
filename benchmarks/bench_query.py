"""Insights query benchmark: ``GET /api/v1/insights``, its summary and trends over 1,000,000 insights.

Loads ``--rows`` conversations and insights that occurred over 90 days (one or two of twelve clusters
each) into a fresh SQLite file or PostgreSQL database (``--database``), starts the real web process on
it, and times sequential requests beside ``GET /healthz`` on the same server as the baseline:

- ``/api/v1/insights`` (limit 100, ``total_count`` included) for windows of one day and of 30 days,
  starting at a random second from the day before the data to the last day that fits (so both edges
  fall mid-day), with and without ``sentiment`` and ``min_confidence``;
- the summary of a 30-day window;
- ``/api/v1/insights/trends`` by day over all 90 days (from midnight, and from a random second so both
  edges are partial days), with each filter, and by hour over one and seven days.

Prints medians, p99s and the query plans (``EXPLAIN``) of the count and page statements.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timedelta
from itertools import islice

import httpx
from peewee import PostgresqlDatabase

from benchmarks.harness import CLUSTERS, HOST, Run, add_database_options, postgres_server
from settings import load_settings
from store import counts, reports, rollup_check
from store.db import open_database
from store.migrations import migrate
from store.models import Insight

WEB_PORT = 8331
EPOCH = datetime(2026, 1, 1)
DAYS = 90
CHUNK = 50_000
VARIANTS = {
    "no filter": {},
    "sentiment=negative": {"sentiment": "negative"},
    "min_confidence=0.7": {"min_confidence": "0.7"},
    "both": {"sentiment": "negative", "min_confidence": "0.7"},
    "min_confidence=0.73 (splits a band)": {"min_confidence": "0.73"},
}


def rows(count: int):
    """Conversations and insights, occurred (and received) evenly over ``DAYS`` days, with varied scores
    and clusters."""
    rng = random.Random(7)
    step = DAYS * 86_400 / count
    for n in range(count):
        received = (EPOCH + timedelta(seconds=n * step)).isoformat(sep=" ")
        conversation_id = f"c{n:08d}"
        score, confidence = round(rng.uniform(-1, 1), 3), round(rng.uniform(0, 1), 3)
        clusters = json.dumps(rng.sample(CLUSTERS, rng.choice((1, 1, 2))))
        yield (
            (conversation_id, "completed", '{"messages":[]}', "h", received, received, received, received, 1),
            (
                conversation_id,
                received,
                received,
                score,
                clusters,
                confidence,
                "reasoning",
                "model",
                "v1",
                "{}",
                received,
            ),
        )


def insert_many(db, cursor, statement: str, rows: list[tuple]) -> None:
    """``statement`` (``INSERT ... VALUES``) for every row, the fast way of each driver."""
    if isinstance(db, PostgresqlDatabase):
        from psycopg2.extras import execute_values

        execute_values(cursor, statement + " %s", rows, page_size=5000)
    else:
        cursor.executemany(statement + " (" + ", ".join(["?"] * len(rows[0])) + ")", rows)


def load(db, count: int) -> None:
    """Bulk load with the driver directly (the benchmark measures reads, not this), then rebuild the
    daily counts, as an operator does after writing insights behind the store's back, and let the
    database take stock (on PostgreSQL ``VACUUM ANALYZE``: index-only scans need the visibility map,
    which autovacuum keeps up in a running system)."""
    conversation_sql = (
        "INSERT INTO conversations (id, status, payload, payload_hash, received_at, updated_at, enqueued_at, "
        "occurred_at, attempts) VALUES"
    )
    insight_sql = (
        "INSERT INTO insights (conversation_id, received_at, occurred_at, sentiment_score, clusters, confidence, "
        "reasoning, "
        "model, prompt_version, raw_response, analyzed_at) VALUES"
    )
    generated = rows(count)
    connection = db.connection()
    while chunk := list(islice(generated, CHUNK)):
        with db.atomic():
            cursor = connection.cursor()
            insert_many(db, cursor, conversation_sql, [c for c, _i in chunk])
            insert_many(db, cursor, insight_sql, [i for _c, i in chunk])
        print(f"loaded {chunk[-1][0][0]}", end="\r", file=sys.stderr)
    started = time.perf_counter()
    cells = rollup_check.rebuild()
    print(f"rebuilt the daily counts: {cells} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    db.execute_sql("VACUUM ANALYZE" if isinstance(db, PostgresqlDatabase) else "ANALYZE")


def explain(db, postgres: bool) -> list[str]:
    """Plans of the count and page statements, for a filtered window of all days but the first, starting
    at noon (two partial-day edges, whole days from the rollup, a band split by min_confidence)."""
    filters = counts.Filters(sentiment="negative", min_confidence=0.73)
    query = reports.InsightQuery(EPOCH + timedelta(hours=12), EPOCH + timedelta(days=DAYS, hours=12), 100, filters)
    statements = reports.explainable(query)
    prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
    lines = []
    for name, (sql, params) in statements.items():
        plan = db.execute_sql(prefix + sql, params).fetchall()
        lines.append(f"{name}: " + " | ".join(str(row[-1]) for row in plan))
    return lines


def compare_counts(repeats: int) -> list[str]:
    """In this process, the count of a 30-day window at a random second: one exact count over the
    window from the index (what ``total_count`` cost before the rollup) against ``store.counts``; both
    must agree. Rows of a Markdown table: filters, medians in ms, ratio."""
    rng = random.Random(2)
    lines = []
    for name, extra in VARIANTS.items():
        filters = counts.Filters(
            extra.get("sentiment"), min_confidence=float(extra["min_confidence"]) if "min_confidence" in extra else None
        )
        start = EPOCH + timedelta(seconds=rng.randrange(-86_400, 0))
        end = start + timedelta(days=30)
        plain = Insight.select().where(Insight.occurred_at >= start, Insight.occurred_at < end, *filters.conditions())
        assert plain.count() == counts.count(start, end, filters)
        one_count = statistics.median(elapsed_ms(plain.count) for _ in range(repeats))
        rollup = statistics.median(elapsed_ms(lambda: counts.count(start, end, filters)) for _ in range(repeats))
        lines.append(f"| {name} | {one_count:.1f} | {rollup:.1f} | {one_count / rollup:.1f} |")
    return lines


def elapsed_ms(call) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def timed(client: httpx.Client, path: str, params_for, requests: int) -> list[float]:
    latencies = []
    for n in range(requests):
        started = time.perf_counter()
        response = client.get(path, params=params_for(n))
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return latencies


TREND_VARIANTS = {
    "": {},
    ", sentiment=negative": {"sentiment": "negative"},
    ", min_confidence=0.7": {"min_confidence": "0.7"},
    ", cluster=billing": {"cluster": "billing"},
    ", cluster=billing, sentiment=negative": {"cluster": "billing", "sentiment": "negative"},
    ", min_confidence=0.73 (splits a band)": {"min_confidence": "0.73"},
}


def time_trends(client: httpx.Client, window, requests: int) -> dict[str, list[float]]:
    """Latencies of the trends lines (see the module's docstring)."""
    whole = {"start_time": EPOCH.isoformat(), "end_time": (EPOCH + timedelta(days=DAYS)).isoformat()}
    edged = window(DAYS)  # from a random second of the day before the data: both edges partial
    results = {}
    for name, extra in TREND_VARIANTS.items():
        results[f"trends by day, {DAYS} days from midnight{name}"] = timed(
            client, "/api/v1/insights/trends", lambda n: {**whole, **extra}, requests
        )
    for name in ("", ", sentiment=negative"):
        extra = TREND_VARIANTS[name]
        results[f"trends by day, {DAYS} days, edges mid-day{name}"] = timed(
            client,
            "/api/v1/insights/trends",
            lambda n: {**{k: v for k, v in edged(n).items() if k != "limit"}, **extra},
            requests,
        )
    for days in (1, 7):
        hours = window(days)
        results[f"trends by hour, {days} day(s)"] = timed(
            client,
            "/api/v1/insights/trends",
            lambda n: {**{k: v for k, v in hours(n).items() if k != "limit"}, "bucket": "hour"},
            requests,
        )
    return results


def prepare(env: dict[str, str], rows: int, postgres: bool) -> tuple[list[str], list[str]]:
    """Load the database of ``env`` with ``rows`` insights; the query plans and the in-process counts."""
    db = open_database(load_settings(env))
    migrate(db)
    started = time.perf_counter()
    load(db, rows)
    print(f"loaded {rows} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    plans = explain(db, postgres)
    count_lines = compare_counts(25)
    db.close()
    return plans, count_lines


def measure(client: httpx.Client, requests: int) -> dict[str, list[float]]:
    """Latencies of every line of the table (see the module's docstring), ``requests`` each."""
    rng = random.Random(1)

    def window(days: int):
        def params(n: int) -> dict:
            first = EPOCH + timedelta(seconds=rng.randrange(-86_400, (DAYS - days) * 86_400 + 1))  # edges mid-day
            return {
                "start_time": first.isoformat(),
                "end_time": (first + timedelta(days=days)).isoformat(),
                "limit": 100,
            }

        return params

    results = {"GET /healthz (baseline)": timed(client, "/healthz", lambda n: {}, requests)}
    for days in (1, 30):
        for name, extra in VARIANTS.items():
            params = window(days)
            results[f"{days} day(s), {name}"] = timed(
                client, "/api/v1/insights", lambda n: {**params(n), **extra}, requests
            )
    params = window(30)
    results["summary, 30 days"] = timed(
        client,
        "/api/v1/insights/summary",
        lambda n: {key: value for key, value in params(n).items() if key != "limit"},
        requests,
    )
    results.update(time_trends(client, window, requests))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    add_database_options(parser)
    parser.add_argument("--requests", type=int, default=200)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-query-", postgres=postgres_server(args)) as run:
        env = run.env(INBOUND_RPS="1000000")
        plans, count_lines = prepare(env, args.rows, bool(run.database_url))
        run.start_server("ingress:app", WEB_PORT, env)
        with httpx.Client(base_url=f"http://{HOST}:{WEB_PORT}", timeout=60) as client:
            results = measure(client, args.requests)

    baseline = statistics.median(results["GET /healthz (baseline)"])
    print(f"database={args.database} rows={args.rows} requests={args.requests} per line, sequential")
    print()
    print("| request | p50 ms | p99 ms | p50 / healthz |")
    print("|---|---|---|---|")
    for name, latencies in results.items():
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(
            f"| {name} | {statistics.median(latencies):.1f} | {p99:.1f} | "
            f"{statistics.median(latencies) / baseline:.1f} |"
        )
    print()
    print("count of a 30-day window, in process (median of 25):")
    print()
    print("| filters | one exact count, ms | rollup, ms | ratio |")
    print("|---|---|---|---|")
    print("\n".join(count_lines))
    print()
    for line in plans:
        print(f"- {line}")


if __name__ == "__main__":
    main()
