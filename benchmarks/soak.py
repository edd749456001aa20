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
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import psutil

from benchmarks.bench_ingress import HOST, body, start_server
from local.embedded_redis import EmbeddedRedis
from benchmarks.loadgen import open_loop, post_json
from local.supervisor import ROOT, stop_all, worker_command
from settings import load_settings
from store import rollup_check
from store.db import open_database

KEY = "soak-key"
EMULATOR_PORT, WEB_PORT = 8341, 8342


def start_worker(env: dict[str, str], index: int) -> subprocess.Popen:
    worker_env = {**env, "dramatiq_prom_port": str(9300 + index), "WORKER_PROCESSES": "1", "WORKER_THREADS": "8"}
    return subprocess.Popen(worker_command(), cwd=ROOT, env=worker_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def resident_mb(process: subprocess.Popen) -> list[float]:
    """RSS of each Dramatiq worker process under ``process`` (its forked children doing the work)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child.memory_info().rss / 2**20 for child in children if "ForkProcess" not in " ".join(child.cmdline())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rps", type=int, default=100, help="INBOUND_RPS and the offered load")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--kill-every", type=float, default=60)
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix="soak-")
    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_PATH": f"{scratch}/soak.db", "DATABASE_URL": "",
           "INBOUND_RPS": str(args.rps), "GROK_API_KEY": KEY, "GROK_BASE_URL": f"http://127.0.0.1:{EMULATOR_PORT}/v1",
           "LEASE_SECONDS": "30", "REQUEUE_SECONDS": "30", "RECONCILE_INTERVAL_SECONDS": "10", "BACKOFF_SECONDS": "0.5", "MAX_RETRIES": "5",
           "BATCH_FLUSH_SECONDS": "1", "dramatiq_prom_db": f"{scratch}/metrics"}
    os.makedirs(env["dramatiq_prom_db"])
    if embedded:
        env["REDIS_URL"] = embedded.url
    processes = [subprocess.Popen([sys.executable, "-m", "testing.emulator", "--port", str(EMULATOR_PORT), "--api-key", KEY,
                                   "--latency", str(args.latency)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)]
    workers: list[subprocess.Popen] = []
    memory: list[tuple[float, float]] = []  # (seconds into the run, largest worker RSS in MB)
    kills = 0
    try:
        processes.append(start_server("ingress:app", WEB_PORT, env, 1))
        httpx.post(f"http://127.0.0.1:{EMULATOR_PORT}/_emulator/config", json={"fault_rate": args.fault_rate})
        workers = [start_worker(env, 0), start_worker(env, 1)]
        seconds = args.minutes * 60
        load: dict = {}
        driver = threading.Thread(target=lambda: load.update(result=open_loop(
            HOST, WEB_PORT, post_json("/api/v1/conversations", f"{HOST}:{WEB_PORT}", body), seconds, args.rps, 16)))
        started = time.monotonic()
        driver.start()
        next_kill = started + args.kill_every
        while driver.is_alive():
            time.sleep(5)
            memory.append((time.monotonic() - started, max([0.0, *(mb for w in workers for mb in resident_mb(w))])))
            if time.monotonic() >= next_kill:
                victim = kills % 2
                os.killpg(workers[victim].pid, signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start_worker(env, victim)
                kills += 1
                next_kill += args.kill_every
        driver.join()
        result = load["result"]
        database = sqlite3.connect(env["DB_PATH"])
        drain_started = time.monotonic()
        while database.execute("SELECT COUNT(*) FROM conversations WHERE status IN ('queued','processing')").fetchone()[0]:
            if time.monotonic() - drain_started > 600:
                print("gave up waiting for the backlog after 10 minutes", file=sys.stderr)
                break
            time.sleep(2)
        drained = time.monotonic() - drain_started
        stored = database.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
        statuses = dict(database.execute("SELECT status, COUNT(*) FROM conversations GROUP BY status").fetchall())
        unexplained = database.execute("SELECT COUNT(*) FROM conversations WHERE status = 'failed' AND (last_error IS NULL OR last_error = '')").fetchone()[0]
        insights, distinct = database.execute("SELECT COUNT(*), COUNT(DISTINCT conversation_id) FROM insights").fetchone()
        orphans = database.execute("SELECT COUNT(*) FROM conversations c WHERE status = 'completed' AND NOT EXISTS (SELECT 1 FROM insights i WHERE i.conversation_id = c.id)").fetchone()[0]
        reasons = database.execute("SELECT last_error, COUNT(*) FROM conversations WHERE status = 'failed' GROUP BY last_error ORDER BY 2 DESC LIMIT 3").fetchall()
        open_database(load_settings(env))
        drift = rollup_check.drift()
    finally:
        stop_all([*workers, *processes[::-1]])
        if embedded:
            embedded.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    accepted = result.count(202)
    early = [mb for t, mb in memory if t < 120 and mb]
    late = [mb for t, mb in memory if t >= seconds - 120 and mb]
    print(f"minutes={args.minutes} rps={args.rps} fault_rate={args.fault_rate} latency={args.latency}s "
          f"workers=2x(1 process, 8 threads) kills={kills}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| requests sent / 202 / 429 / other | {len(result.latencies)} / {accepted} / {result.count(429)} / "
          f"{len(result.latencies) - accepted - result.count(429) + result.errors} |")
    print(f"| accepted conversations stored | {stored} of {accepted} (lost: {accepted - stored}) |")
    print(f"| final statuses | {statuses} |")
    print(f"| failed without a reason | {unexplained} |")
    print(f"| insights / distinct conversations / completed without insight | {insights} / {distinct} / {orphans} |")
    print(f"| daily counts (cells and clusters) that differ from the insights | {len(drift)} row(s) |")
    print(f"| backlog drained after the load stopped | {drained:.0f} s |")
    print(f"| worker RSS, largest process: first 2 min / last 2 min / max | {max(early or [0]):.0f} / {max(late or [0]):.0f} / {max(mb for _t, mb in memory):.0f} MB |")
    print(f"| most common failure reasons | {reasons} |")


if __name__ == "__main__":
    main()
