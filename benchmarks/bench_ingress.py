"""Ingress benchmark: accepted conversations per second and latency, against a bare Falcon endpoint.

Both servers run under the same uvicorn, on the same machine, measured in alternation in the same run:
closed loop (maximum throughput) and open loop at a fixed rate (latency percentiles). The real service
runs with its inbound limit raised out of the way, SQLite (or ``DATABASE_URL``) and Redis (``REDIS_URL``,
else an embedded one); no worker runs, so only ingress is measured. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from local.embedded_redis import EmbeddedRedis
from benchmarks.loadgen import LoadResult, closed_loop, open_loop, post_json
from local.supervisor import ROOT, stop_all

HOST = "127.0.0.1"


def body(n: int) -> bytes:
    return json.dumps(
        {"messages": [{"role": "customer", "content": f"Order {n} arrived late and the box was damaged."},
                      {"role": "agent", "content": "Sorry about that, a replacement is on its way."}],
         "metadata": {"channel": "chat", "n": n}}
    ).encode()


def start_server(app: str, port: int, env: dict[str, str], workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--no-access-log",
               "--log-level", "warning", "--workers", str(workers)]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://{HOST}:{port}/healthz")  # any answer (the bare app's is 404) means it is up
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{app} did not start")


def summary(results: list[LoadResult], status: int) -> dict[str, float]:
    return {
        "rate": statistics.median(r.rate(status) for r in results),
        "p50": statistics.median(r.percentile_ms(50) for r in results),
        "p99": statistics.median(r.percentile_ms(99) for r in results),
        "other": sum(sum(n for s, n in r.statuses.items() if s != status) + r.errors for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="connections in the closed loop")
    parser.add_argument("--rate", type=float, default=1000, help="requests a second in the open loop")
    parser.add_argument("--web-concurrency", type=int, default=1, help="uvicorn worker processes per server")
    args = parser.parse_args()

    embedded = None if os.environ.get("REDIS_URL") else EmbeddedRedis()
    scratch = tempfile.mkdtemp(prefix="bench-ingress-")
    env = {**os.environ, "INBOUND_RPS": "1000000", "DB_PATH": f"{scratch}/bench.db", "PYTHONPATH": str(ROOT)}
    if embedded:
        env["REDIS_URL"] = embedded.url
    servers = {"bare falcon": ("benchmarks.bare_app:app", 8301), "ingress": ("ingress:app", 8302)}
    processes = [start_server(app, port, env, args.web_concurrency) for app, port in servers.values()]
    results: dict[tuple[str, str], list[LoadResult]] = {}
    try:
        for round_number in range(args.rounds):
            for name, (_app, port) in servers.items():
                build = post_json("/api/v1/conversations", f"{HOST}:{port}", body)
                results.setdefault((name, "closed"), []).append(closed_loop(HOST, port, build, args.seconds, args.concurrency))
                results.setdefault((name, "open"), []).append(open_loop(HOST, port, build, args.seconds, args.rate))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        stop_all(processes)
        if embedded:
            embedded.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"rounds={args.rounds} seconds={args.seconds} concurrency={args.concurrency} rate={args.rate} "
          f"web-concurrency={args.web_concurrency} cpus={os.cpu_count()}")
    print()
    print(f"| server | closed loop: 202/s | closed p50 ms | closed p99 ms | open loop {args.rate:.0f}/s: p50 ms | open p99 ms | non-202 |")
    print("|---|---|---|---|---|---|---|")
    table = {}
    for name in servers:
        closed, opened = summary(results[(name, "closed")], 202), summary(results[(name, "open")], 202)
        table[name] = closed
        print(f"| {name} | {closed['rate']:.0f} | {closed['p50']:.1f} | {closed['p99']:.1f} | {opened['p50']:.1f} | "
              f"{opened['p99']:.1f} | {closed['other'] + opened['other']} |")
    ratio = table["ingress"]["rate"] / table["bare falcon"]["rate"]
    print(f"\ningress throughput / bare falcon throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
