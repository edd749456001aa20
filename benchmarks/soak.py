"""Soak run: ``--minutes`` at ``INBOUND_RPS`` against a faulty Grok, a worker killed every minute.

Real processes: one web, two worker commands (one process each) and the xAI emulator answering after
``--latency`` s with a random fault (429, 500, 503, malformed) on ``--fault-rate`` of its calls. Ingress
takes ``--rps`` conversations a second on an open-loop schedule. Every ``--kill-every`` seconds one
worker is killed with SIGKILL and started again. At the end the load stops and the run waits until every
conversation is settled. It reports: accepted (202) against rows stored, conversations lost or stored
twice, the final statuses (failed ones all with a reason), whether the daily counts behind
``total_count`` still equal the insights, and the resident memory of the worker processes sampled along
the way.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import threading
import time

import httpx

from benchmarks.harness import HOST, KEY, Run, body, kill, rss_mb, worker_processes
from benchmarks.loadgen import LoadResult, open_loop, post_json
from settings import load_settings
from store import rollup_check
from store.db import open_database

EMULATOR_PORT, WEB_PORT = 8341, 8342
DRAIN_LIMIT_SECONDS = 600


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rps", type=int, default=100, help="INBOUND_RPS and the offered load")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--kill-every", type=float, default=60)
    return parser


def service_env(run: Run, args: argparse.Namespace) -> dict[str, str]:
    metrics = run.directory / "metrics"
    metrics.mkdir()
    return run.env(
        INBOUND_RPS=str(args.rps),
        GROK_API_KEY=KEY,
        GROK_BASE_URL=f"http://{HOST}:{EMULATOR_PORT}/v1",
        LEASE_SECONDS="30",
        REQUEUE_SECONDS="30",
        RECONCILE_INTERVAL_SECONDS="10",
        BACKOFF_SECONDS="0.5",
        MAX_RETRIES="5",
        BATCH_FLUSH_SECONDS="1",
        dramatiq_prom_db=str(metrics),
    )


def start_worker(run: Run, env: dict[str, str], index: int) -> subprocess.Popen:
    """One worker command of one process and 8 threads, with metrics on a port of its own."""
    return run.start_worker(
        {**env, "dramatiq_prom_port": str(9300 + index), "WORKER_PROCESSES": "1", "WORKER_THREADS": "8"}
    )


def load_and_kill(
    run: Run, env: dict[str, str], args: argparse.Namespace
) -> tuple[LoadResult, list[tuple[float, float]], int]:
    """Offer the load for ``--minutes``, killing a worker every ``--kill-every`` seconds; the load's result,
    the largest worker RSS sampled along the way (seconds into the run, MB), and how many kills."""
    workers = [start_worker(run, env, 0), start_worker(run, env, 1)]
    load: dict = {}
    driver = threading.Thread(
        target=lambda: load.update(
            result=open_loop(
                HOST,
                WEB_PORT,
                post_json("/api/v1/conversations", f"{HOST}:{WEB_PORT}", body),
                args.minutes * 60,
                args.rps,
                16,
            )
        )
    )
    memory: list[tuple[float, float]] = []
    kills = 0
    started = time.monotonic()
    driver.start()
    next_kill = started + args.kill_every
    while driver.is_alive():
        time.sleep(5)
        memory.append(
            (time.monotonic() - started, max([0.0, *(rss_mb(p) for w in workers for p in worker_processes(w))]))
        )
        if time.monotonic() >= next_kill:
            victim = kills % 2
            kill(workers[victim])
            workers[victim] = start_worker(run, env, victim)
            kills += 1
            next_kill += args.kill_every
    driver.join()
    return load["result"], memory, kills


def settle(db_path: str) -> dict:
    """Wait until no conversation is queued or processing (at most ``DRAIN_LIMIT_SECONDS``); what the
    database then holds."""
    database = sqlite3.connect(db_path)
    drain_started = time.monotonic()
    while database.execute("SELECT COUNT(*) FROM conversations WHERE status IN ('queued','processing')").fetchone()[0]:
        if time.monotonic() - drain_started > DRAIN_LIMIT_SECONDS:
            print("gave up waiting for the backlog after 10 minutes", file=sys.stderr)
            break
        time.sleep(2)
    figures = {"drained": time.monotonic() - drain_started}
    figures["stored"] = database.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    figures["statuses"] = dict(
        database.execute("SELECT status, COUNT(*) FROM conversations GROUP BY status").fetchall()
    )
    figures["unexplained"] = database.execute(
        "SELECT COUNT(*) FROM conversations WHERE status = 'failed' AND (last_error IS NULL OR last_error = '')"
    ).fetchone()[0]
    figures["insights"], figures["distinct"] = database.execute(
        "SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights"
    ).fetchone()
    figures["orphans"] = database.execute(
        "SELECT COUNT(*) FROM conversations c WHERE status = 'completed' AND NOT EXISTS (SELECT 1 FROM insights i "
        "WHERE i.conversation_id = c.id)"
    ).fetchone()[0]
    figures["reasons"] = database.execute(
        "SELECT last_error, COUNT(*) FROM conversations WHERE status = 'failed' GROUP BY last_error ORDER BY 2 DESC "
        "LIMIT 3"
    ).fetchall()
    database.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("soak-") as run:
        env = service_env(run, args)
        run.start_emulator(EMULATOR_PORT, "--latency", str(args.latency))
        run.start_server("ingress:app", WEB_PORT, env)
        httpx.post(f"http://{HOST}:{EMULATOR_PORT}/_emulator/config", json={"fault_rate": args.fault_rate})
        result, memory, kills = load_and_kill(run, env, args)
        figures = settle(env["DB_PATH"])
        open_database(load_settings(env))
        drift = rollup_check.drift()
    report(args, result, memory, kills, figures, drift)


def report(
    args: argparse.Namespace,
    result: LoadResult,
    memory: list[tuple[float, float]],
    kills: int,
    figures: dict,
    drift: list,
) -> None:
    seconds = args.minutes * 60
    accepted = result.count(202)
    early = [mb for t, mb in memory if t < 120 and mb]
    late = [mb for t, mb in memory if t >= seconds - 120 and mb]
    print(
        f"minutes={args.minutes} rps={args.rps} fault_rate={args.fault_rate} latency={args.latency}s "
        f"workers=2x(1 process, 8 threads) kills={kills}"
    )
    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| requests sent / 202 / 429 / other | {len(result.latencies)} / {accepted} / {result.count(429)} / "
        f"{len(result.latencies) - accepted - result.count(429) + result.errors} |"
    )
    print(
        f"| accepted conversations stored | {figures['stored']} of {accepted} (lost: {accepted - figures['stored']}) |"
    )
    print(f"| final statuses | {figures['statuses']} |")
    print(f"| failed without a reason | {figures['unexplained']} |")
    print(
        f"| insights / distinct conversations / completed without insight | {figures['insights']} / "
        f"{figures['distinct']} / "
        f"{figures['orphans']} |"
    )
    print(f"| daily counts (cells and clusters) that differ from the insights | {len(drift)} row(s) |")
    print(f"| backlog drained after the load stopped | {figures['drained']:.0f} s |")
    print(
        f"| worker RSS, largest process: first 2 min / last 2 min / max | {max(early or [0]):.0f} / "
        f"{max(late or [0]):.0f} / {max(mb for _t, mb in memory):.0f} MB |"
    )
    print(f"| most common failure reasons | {figures['reasons']} |")


if __name__ == "__main__":
    main()
