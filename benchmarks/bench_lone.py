"""A lone conversation's wait: posted while nothing else is going on, how long until it is ``completed``.

A batch that is not full is cut once its oldest conversation has waited ``BATCH_FLUSH_SECONDS``, so a
lone conversation should be done within that, plus the Grok call, plus the hops between Dramatiq messages
(collect, flush, analyze, store), which the target allows 1 s. Runs the real web and worker (as the
Procfile starts them) against the xAI emulator answering after ``--latency`` seconds, posts
``--conversations`` one at a time (each after the previous completed) and prints the median and the
slowest of their waits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from benchmarks.bench_ingress import HOST, body, start_server
from local.embedded_redis import EmbeddedRedis
from local.supervisor import ROOT, stop_all, worker_command

KEY = "bench-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="the emulator's answer time, seconds")
    parser.add_argument("--flush", type=float, default=2.0, help="BATCH_FLUSH_SECONDS")
    parser.add_argument("--conversations", type=int, default=10)
    args = parser.parse_args()
    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis()
    scratch = tempfile.mkdtemp(prefix="bench-lone-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_PATH": f"{scratch}/bench.db", "DATABASE_URL": "",
           "GROK_API_KEY": KEY, "GROK_BASE_URL": "http://127.0.0.1:8321/v1", "BATCH_FLUSH_SECONDS": str(args.flush)}
    if embedded:
        env["REDIS_URL"] = embedded.url
    emulator = [sys.executable, "-m", "testing.emulator", "--port", "8321", "--api-key", KEY, "--latency", str(args.latency)]
    processes = [subprocess.Popen(emulator, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)]
    try:
        processes.append(start_server("ingress:app", 8322, env, 1))
        processes.append(subprocess.Popen(worker_command(), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, start_new_session=True,
                                          stderr=subprocess.DEVNULL))
        time.sleep(5)  # the worker boots
        waits = [lone_wait(n) for n in range(args.conversations)]
    finally:
        stop_all(processes[::-1])
        if embedded:
            embedded.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    target = args.flush + args.latency + 1
    print(f"latency={args.latency} BATCH_FLUSH_SECONDS={args.flush} conversations={args.conversations}")
    print(f"wait until completed: median {statistics.median(waits):.2f} s, slowest {max(waits):.2f} s "
          f"(target <= {target:.1f} s)")


def lone_wait(n: int) -> float:
    client = httpx.Client(base_url=f"http://{HOST}:8322", timeout=10)
    posted = time.monotonic()
    response = client.post("/api/v1/conversations", content=body(n), headers={"content-type": "application/json"})
    location = response.headers["location"]
    while client.get(location).json()["status"] != "completed":
        time.sleep(0.02)
    return time.monotonic() - posted


if __name__ == "__main__":
    main()
