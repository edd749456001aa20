"""Outbound benchmark: Grok calls per second as the server counts them, and conversations completed.

Runs the real service against the xAI emulator answering after ``--latency`` seconds (plus a lognormal
draw with ``--latency-median`` and ``--latency-sigma``, capped at ``--latency-max``; limited by ``--tpm``
and ``--rps`` as xAI would, see ``ops/grok_emulator.py``): one web process,
``--workers`` worker processes, ``OUTBOUND_RPS`` and ``BATCH_SIZE`` as given. Conversations are posted
through ingress first (for ``--seconds`` of load), then the workers start and drain them. Figures come
from the emulator's own log of arrivals (what the server saw) and from ``analyzed_at`` in the database,
over the steady middle of the run (the first and last ``--edge`` seconds left out).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import httpx

from ops.bench_ingress import HOST, body, start_server
from ops.embedded_redis import EmbeddedRedis
from ops.loadgen import closed_loop, post_json
from ops.supervisor import ROOT, stop_all, worker_command

KEY = "bench-key"
EMULATOR_OPTIONS = ("latency", "latency_median", "latency_sigma", "latency_max", "tpm", "rps")


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def windows_above(times: list[float], limit: int, window: float = 1.0) -> int:
    """How many calls were the (limit+1)-th or later within one second (0 means the limit always held)."""
    times = sorted(times)
    return sum(1 for i in range(limit, len(times)) if times[i] - times[i - limit] < window)


def emulator_command(args: argparse.Namespace) -> list[str]:
    """The emulator on port 8311, with the benchmark's latency and limit options passed on."""
    command = [sys.executable, "-m", "ops.grok_emulator", "--port", "8311", "--api-key", KEY]
    for name in EMULATOR_OPTIONS:
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outbound-rps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--latency", type=float, default=1.0, help="the emulator's fixed latency, seconds")
    parser.add_argument("--latency-median", type=float, default=0.0, help="median of a lognormal latency added (0: none)")
    parser.add_argument("--latency-sigma", type=float, default=0.0, help="shape of that lognormal (0.5: a long tail)")
    parser.add_argument("--latency-max", type=float, default=0.0, help="cap on the emulator's latency (0: none)")
    parser.add_argument("--tpm", type=int, default=0, help="the emulator's tokens-per-minute limit, as xAI's (0: none)")
    parser.add_argument("--rps", type=int, default=0, help="the emulator's requests-per-second limit, as xAI's (0: none)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--threads", type=int, default=12, help="threads per worker process")
    parser.add_argument("--conversations", type=int, default=8000)
    parser.add_argument("--edge", type=float, default=5.0)
    args = parser.parse_args()

    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis()
    scratch = tempfile.mkdtemp(prefix="bench-outbound-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_PATH": f"{scratch}/bench.db", "INBOUND_RPS": "1000000",
           "OUTBOUND_RPS": str(args.outbound_rps), "BATCH_SIZE": str(args.batch_size), "GROK_API_KEY": KEY,
           "GROK_BASE_URL": "http://127.0.0.1:8311/v1", "BATCH_FLUSH_SECONDS": "1"}
    if embedded:
        env["REDIS_URL"] = embedded.url
    processes = [subprocess.Popen(emulator_command(args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL)]
    try:
        processes.append(start_server("ingress:app", 8312, env, 1))
        build = post_json("/api/v1/conversations", f"{HOST}:8312", body)
        posted = 0
        while posted < args.conversations:
            posted += closed_loop(HOST, 8312, build, 1.0, 16).count(202)
        print(f"posted {posted} conversations", file=sys.stderr)
        started = time.time()
        sizing = {"WORKER_PROCESSES": str(args.workers), "WORKER_THREADS": str(args.threads)}
        processes.append(subprocess.Popen(worker_command(), cwd=ROOT, env={**env, **sizing},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        database = sqlite3.connect(env["DB_PATH"])
        while database.execute("SELECT COUNT(*) FROM conversations WHERE status IN ('queued','processing')").fetchone()[0]:
            time.sleep(1)
            if time.time() - started > 30 + 3 * posted / (args.outbound_rps * args.batch_size):
                print("timed out before every conversation settled", file=sys.stderr)
                break
        log = httpx.get("http://127.0.0.1:8311/_emulator/log", timeout=30).json()
        analyzed = [row[0] for row in database.execute("SELECT analyzed_at FROM insights")]
        statuses = dict(database.execute("SELECT status, COUNT(*) FROM conversations GROUP BY status").fetchall())
    finally:
        stop_all(processes[::-1])
        if embedded:
            embedded.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    arrivals = sorted(entry["t"] for entry in log)
    first, last = arrivals[0] + args.edge, arrivals[-1] - args.edge
    steady = [t for t in arrivals if first <= t <= last]
    call_rate = len(steady) / (last - first)
    done = sorted(datetime.fromisoformat(a).replace(tzinfo=timezone.utc).timestamp() for a in analyzed)
    done_first, done_last = done[0] + args.edge, done[-1] - args.edge  # completions lag calls by a latency
    steady_done = [t for t in done if done_first <= t <= done_last]
    per_call = statistics.mean(len(entry["ids"]) for entry in log)
    full = sum(1 for entry in log if len(entry["ids"]) == args.batch_size) / len(log)
    emulator = " ".join(f"{name}={getattr(args, name)}" for name in EMULATOR_OPTIONS)
    print(f"outbound_rps={args.outbound_rps} batch_size={args.batch_size} {emulator} "
          f"workers={args.workers}x{args.threads} conversations={posted}")
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| Grok calls/s, steady ({last - first:.0f} s) | {call_rate:.2f} ({call_rate / args.outbound_rps:.1%} of OUTBOUND_RPS) | >= 95 % |")
    print(f"| most calls in any 1 s window (server's clock) | {max_in_any_window(arrivals)} | <= {args.outbound_rps} |")
    print(f"| calls that made a 1 s window exceed the limit | {windows_above(arrivals, args.outbound_rps)} | 0 |")
    print(f"| conversations completed/s, steady ({done_last - done_first:.0f} s) | {len(steady_done) / (done_last - done_first):.1f} | >= {0.95 * args.outbound_rps * args.batch_size:.0f} |")
    print(f"| conversations per call (mean; full batches) | {per_call:.2f}; {full:.1%} | {args.batch_size} |")
    print(f"| calls in all / non-200 | {len(log)} / {sum(1 for e in log if e['status'] != 200)} | |")
    refused = [entry.get("refused") for entry in log]
    print(f"| calls the emulator refused over tpm / rps | {refused.count('tpm')} / {refused.count('rps')} | 0 / 0 |")
    print(f"| final statuses | {statuses} | all completed |")


if __name__ == "__main__":
    main()
