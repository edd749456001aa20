"""Outbound benchmark: Grok calls per second as the server counts them, and conversations completed.

Runs the real service against the xAI emulator answering after ``--latency`` seconds (plus a lognormal
draw with ``--latency-median`` and ``--latency-sigma``, capped at ``--latency-max``; limited by ``--tpm``
and ``--rps`` as xAI would, see ``testing/emulator.py``; ``--tpm`` is also the service's ``OUTBOUND_TPM``):
one web process and one worker command as the Procfile starts it (``--workers`` processes, threads derived
from the outbound limit unless ``--threads``), on SQLite or, with ``--database-url``, a scratch database on
that PostgreSQL server. A backlog of ``--conversations`` is posted through ingress's batch endpoint (1,000 to
a request) first, then the worker runs for ``--seconds`` (or until the backlog is done). With ``--burst``
the worker starts first and the backlog is posted while it runs: the table then says how long after the
first post the calls reached 95 % of ``OUTBOUND_RPS``. Figures come from the emulator's own log of arrivals
(what the server saw) and from ``analyzed_at`` in the database, over the steady middle of the run (the
first and last ``--edge`` seconds left out); the worker side's RSS, CPU and the database connections are
sampled every second.

With ``--backfill N``, N more conversations are posted in the bulk lane (``?lane=bulk``) after the backlog:
they go to the emulator's Batch API, each request answered ``--batch-delay`` seconds after it was added,
while the real-time backlog runs; the table then says how many of them were stored during the run.
Run it with and without to see what a backfill takes from the real-time lane.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from peewee import Database, PostgresqlDatabase, SqliteDatabase

from benchmarks.emulator_log import max_in_any_window, seconds_to_full_rate, tokens_per_minute
from benchmarks.harness import HOST, KEY, Run, body, cpu_seconds, kill, process_tree, rss_mb
from store.db import make_url

EMULATOR_PORT, WEB_PORT = 8311, 8312
EMULATOR_OPTIONS = ("latency", "latency_median", "latency_sigma", "latency_max", "tpm", "rps")


@dataclass
class Outcome:
    """What a run leaves to report: the emulator's log (read at ``fetched_at``), the real-time insights'
    ``analyzed_at``, the final statuses, the worker side's samples, and what ``--kill-at`` and ``--burst``
    measured (``None`` without them)."""

    log: list[dict]
    fetched_at: float
    analyzed: list
    statuses: dict[str, int]
    samples: list[tuple[float, int, float]]
    recovery: tuple[int, str] | None = None  # conversations the killed worker held, seconds to complete them
    full_rate: str | None = None  # seconds from the first post of a burst to 95 % of OUTBOUND_RPS


def emulator_options(args: argparse.Namespace) -> list[str]:
    """The benchmark's latency and limit options, passed on to the emulator."""
    return [option for name in EMULATOR_OPTIONS for option in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]


def service_env(args: argparse.Namespace) -> dict[str, str]:
    """The service's configuration for this run (beside its Redis and database)."""
    return {
        "INBOUND_RPS": "1000000",
        "OUTBOUND_RPS": str(args.outbound_rps),
        "BATCH_SIZE": str(args.batch_size),
        "GROK_API_KEY": KEY,
        "GROK_BASE_URL": f"http://{HOST}:{EMULATOR_PORT}/v1",
        "BATCH_FLUSH_SECONDS": "1",
        "WORKER_PROCESSES": str(args.workers),
        "WORKER_THREADS": str(args.threads),
        "BULK_FLUSH_SECONDS": "1",
        "BULK_TICK_SECONDS": "1",
        "BULK_POLL_SECONDS": "2",
        "BULK_POLL_MAX_SECONDS": "5",
        **({"OUTBOUND_TPM": str(args.tpm)} if args.tpm else {}),
    }


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-outbound-", postgres=args.database_url) as run:
        database = PostgresqlDatabase(**make_url(run.database_url)) if run.database_url else SqliteDatabase(run.db_path)
        try:
            outcome = drive(run, run.env(**service_env(args)), database, args)
        finally:
            database.close()
    report(
        args, args.conversations, outcome.log, outcome.analyzed, outcome.statuses, outcome.samples, outcome.fetched_at
    )
    if outcome.recovery:
        held, seconds = outcome.recovery
        print(
            f"| seconds from the SIGKILL to the last of its {held} claimed conversations completed | {seconds} | < 60 |"
        )
    if outcome.full_rate:
        print(f"| seconds from the first post to a second at >= 95 % of OUTBOUND_RPS | {outcome.full_rate} | <= 10 |")


def drive(run: Run, env: dict[str, str], database: Database, args: argparse.Namespace) -> Outcome:
    """Start the system, post the load, watch the worker; what the emulator and the database then say."""
    run.start_emulator(EMULATOR_PORT, *emulator_options(args))
    run.start_server("ingress:app", WEB_PORT, env)
    httpx.post(
        f"http://{HOST}:{EMULATOR_PORT}/_emulator/config", json={"batch_delay": args.batch_delay}, timeout=10
    ).raise_for_status()
    if not args.burst:
        post_batches(args.conversations, "realtime")
    post_batches(args.backfill, "bulk")
    worker = run.start_worker(env)
    poster, burst_started = None, 0.0
    if args.burst:
        time.sleep(5)  # the worker is up and idle when the burst begins
        poster = threading.Thread(target=post_batches, args=(args.conversations, "realtime"))
        burst_started = time.time()
        poster.start()
    killed = kill_and_replace(run, worker, database, env, args.kill_at) if args.kill_at else None
    samples = watch(run.processes[-1], database, args.seconds)  # the worker, or the one that replaced it
    if poster:
        poster.join()
    recovery = (len(killed[1]), recovery_seconds(database, *killed)) if killed else None
    log = httpx.get(f"http://{HOST}:{EMULATOR_PORT}/_emulator/log", timeout=30).json()
    fetched_at = time.time()
    analyzed = [
        row[0] for row in database.execute_sql("SELECT analyzed_at FROM insights WHERE lane = 'realtime'").fetchall()
    ]
    statuses = {
        f"{lane}/{status}": count
        for lane, status, count in database.execute_sql(
            "SELECT lane, status, COUNT(*) FROM conversations GROUP BY lane, status ORDER BY lane, status"
        ).fetchall()
    }
    full_rate = seconds_to_full_rate(log, burst_started, args.outbound_rps) if args.burst else None
    return Outcome(log, fetched_at, analyzed, statuses, samples, recovery, full_rate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outbound-rps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--latency", type=float, default=1.0, help="the emulator's fixed latency, seconds")
    parser.add_argument(
        "--latency-median", type=float, default=0.0, help="median of a lognormal latency added (0: none)"
    )
    parser.add_argument("--latency-sigma", type=float, default=0.0, help="shape of that lognormal (0.5: a long tail)")
    parser.add_argument("--latency-max", type=float, default=0.0, help="cap on the emulator's latency (0: none)")
    parser.add_argument(
        "--tpm",
        type=int,
        default=0,
        help="tokens per minute, enforced by the emulator as xAI would "
        "and given to the service as OUTBOUND_TPM (0: none)",
    )
    parser.add_argument(
        "--rps", type=int, default=0, help="the emulator's requests-per-second limit, as xAI's (0: none)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (WORKER_PROCESSES)")
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per worker process (0: the default, as out of the box)"
    )
    parser.add_argument("--database-url", default="", help="PostgreSQL server URL; a scratch database is made on it")
    parser.add_argument("--conversations", type=int, default=8000, help="the backlog posted before the worker starts")
    parser.add_argument(
        "--seconds", type=float, default=90, help="how long the worker runs (or until the backlog is done)"
    )
    parser.add_argument("--edge", type=float, default=5.0)
    parser.add_argument(
        "--backfill", type=int, default=0, help="conversations posted in the bulk lane after the backlog"
    )
    parser.add_argument(
        "--batch-delay", type=float, default=20.0, help="seconds the emulator's Batch API takes a request"
    )
    parser.add_argument("--burst", action="store_true", help="post the backlog while the worker runs, not before")
    parser.add_argument(
        "--kill-at", type=float, default=0, help="SIGKILL the worker this many seconds in, start another"
    )
    return parser


def post_batches(count: int, lane: str) -> None:
    """``count`` conversations in ``lane``, 1,000 to a request."""
    for start in range(0, count, 1000):
        items = [json.loads(body(n)) for n in range(start, min(count, start + 1000))]
        answer = httpx.post(
            f"http://{HOST}:{WEB_PORT}/api/v1/conversations/batch?lane={lane}",
            json={"conversations": items},
            timeout=60,
        )
        answer.raise_for_status()
    if count:
        print(f"posted {count} conversations in the {lane} lane", file=sys.stderr)


def watch(worker: subprocess.Popen, database: Database, seconds: float) -> list[tuple[float, int, float]]:
    """Every second until the backlog is done or ``seconds`` pass: the worker side's RSS (MB, every process
    of the worker command), the connections to the database (PostgreSQL; 0 for SQLite) and the worker
    side's CPU seconds so far."""
    samples, started = [], time.time()
    open_sql = "SELECT COUNT(*) FROM conversations WHERE status IN ('queued', 'processing') AND lane = 'realtime'"
    while time.time() - started < seconds and (
        time.time() - started < 15 or database.execute_sql(open_sql).fetchone()[0]
    ):
        time.sleep(1)
        tree = process_tree(worker.pid)
        samples.append((sum(rss_mb(p) for p in tree), connection_count(database), cpu_seconds(tree)))
    return samples


def kill_and_replace(
    run: Run, worker: subprocess.Popen, database: Database, env: dict[str, str], after: float
) -> tuple[float, list[str]]:
    """SIGKILL the worker command ``after`` seconds in, and start another; when, and what it held."""
    time.sleep(after)
    kill(worker)
    killed_at = time.time()
    held = [
        row[0] for row in database.execute_sql("SELECT id FROM conversations WHERE status = 'processing'").fetchall()
    ]
    run.start_worker(env)
    print(f"killed the worker {after:.0f} s in, holding {len(held)} conversations; started another", file=sys.stderr)
    return killed_at, held


def recovery_seconds(database: Database, killed_at: float, held: list[str]) -> str:
    """Seconds from the kill until every conversation the killed worker held was completed (or "not all")."""
    mark = "%s" if isinstance(database, PostgresqlDatabase) else "?"
    done = []
    for start in range(0, len(held), 500):
        chunk = held[start : start + 500]
        sql = f"SELECT analyzed_at FROM insights WHERE conversation_id IN ({', '.join([mark] * len(chunk))})"
        done += [as_epoch(row[0]) for row in database.execute_sql(sql, chunk).fetchall()]
    return (
        f"{max(done) - killed_at:.1f}" if held and len(done) == len(held) else f"not all ({len(done)} of {len(held)})"
    )


def connection_count(database: Database) -> int:
    if not isinstance(database, PostgresqlDatabase):
        return 0
    sql = "SELECT COUNT(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
    return database.execute_sql(sql).fetchone()[0]


def report(
    args,
    posted: int,
    log: list[dict],
    analyzed: list,
    statuses: dict,
    samples: list[tuple[float, int]],
    fetched_at: float,
) -> None:
    arrivals = sorted(entry["t"] for entry in log)
    # The emulator logs a call once answered: a call still in flight when the log was read is missing, so
    # the window ends a longest call before then (calls that arrived later are undercounted).
    longest = max(entry.get("latency") or 0 for entry in log)
    first, last = arrivals[0] + args.edge, min(arrivals[-1] - args.edge, fetched_at - longest)
    steady = [t for t in arrivals if first <= t <= last]
    call_rate = len(steady) / (last - first)
    done = sorted(as_epoch(a) for a in analyzed)
    done_first, done_last = done[0] + args.edge, done[-1] - args.edge  # completions lag calls by a latency
    steady_done = [t for t in done if done_first <= t <= done_last]
    per_call = statistics.mean(len(entry["ids"]) for entry in log)
    full = sum(1 for entry in log if len(entry["ids"]) == args.batch_size) / len(log)
    latencies = sorted(entry.get("latency") or 0 for entry in log)
    emulator = " ".join(f"{name}={getattr(args, name)}" for name in EMULATOR_OPTIONS)
    database = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"outbound_rps={args.outbound_rps} batch_size={args.batch_size} {emulator} workers={args.workers}x"
        f"{args.threads or 'default'} {database} conversations={posted} backfill={args.backfill} "
        f"batch_delay={args.batch_delay}"
    )
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(
        f"| Grok calls/s, steady ({last - first:.0f} s) | {call_rate:.2f} ({call_rate / args.outbound_rps:.1%} of "
        "OUTBOUND_RPS) | >= 95 % |"
    )
    print(
        f"| call latency at the emulator, p50 / p99 | {latencies[len(latencies) // 2]:.1f} s / "
        f"{latencies[int(len(latencies) * 0.99)]:.1f} s | |"
    )
    print(f"| most calls in any 1 s window (server's clock) | {max_in_any_window(arrivals)} | <= {args.outbound_rps} |")
    print(
        f"| conversations completed/s, steady ({done_last - done_first:.0f} s) | "
        f"{len(steady_done) / max(1e-9, done_last - done_first):.1f} | "
        f">= {0.95 * args.outbound_rps * args.batch_size:.0f} |"
    )
    print(f"| conversations per call (mean; full batches) | {per_call:.2f}; {full:.1%} | {args.batch_size} |")
    print(f"| calls in all / non-200 | {len(log)} / {sum(1 for e in log if e['status'] != 200)} | |")
    refused = [entry.get("refused") for entry in log]
    print(f"| calls the emulator refused over tpm / rps | {refused.count('tpm')} / {refused.count('rps')} | 0 / 0 |")
    if args.tpm:
        print(
            f"| tokens per minute used, steady | {tokens_per_minute(log, first, last):.0f} "
            f"({tokens_per_minute(log, first, last) / args.tpm:.0%} of {args.tpm}) | >= 80 % |"
        )
    print(
        f"| worker side RSS, max (at the end) | {max(m for m, _c, _cpu in samples):.0f} MB ({samples[-1][0]:.0f} "
        "MB) | <= 500 MB |"
    )
    print(
        f"| worker side CPU, mean over the run | {(samples[-1][2] - samples[0][2]) / max(1, len(samples) - 1):.2f} "
        "cores | well under 2 |"
    )
    print(
        "| database connections, max | "
        f"{max(c for _m, c, _cpu in samples) if args.database_url else 'n/a (SQLite)'} | bounded |"
    )
    print(f"| final statuses | {statuses} | |")


def as_epoch(value) -> float:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC).timestamp()


if __name__ == "__main__":
    main()
