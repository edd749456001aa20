"""Ingress benchmark: accepted conversations per second and latency, against a bare Falcon endpoint.

Both servers run under the same uvicorn, on the same machine, measured in alternation in the same run:
closed loop (maximum throughput) and open loop at a fixed rate (latency percentiles). The real service
runs with its inbound limit raised out of the way, SQLite (or ``DATABASE_URL``) and Redis (``REDIS_URL``,
else an embedded one); no worker runs, so only ingress is measured. Prints a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from benchmarks.harness import HOST, Run, body
from benchmarks.loadgen import LoadResult, closed_loop, open_loop, post_json


def summary(results: list[LoadResult], status: int) -> dict[str, float]:
    return {
        "rate": statistics.median(r.rate(status) for r in results),
        "p50": statistics.median(r.percentile_ms(50) for r in results),
        "p99": statistics.median(r.percentile_ms(99) for r in results),
        "other": sum(sum(n for s, n in r.statuses.items() if s != status) + r.errors for r in results),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32, help="connections in the closed loop")
    parser.add_argument("--rate", type=float, default=1000, help="requests a second in the open loop")
    parser.add_argument("--web-concurrency", type=int, default=1, help="uvicorn worker processes per server")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    servers = {"bare falcon": ("benchmarks.bare_app:app", 8301), "ingress": ("ingress:app", 8302)}
    results: dict[tuple[str, str], list[LoadResult]] = {}
    with Run("bench-ingress-") as run:
        env = run.env(INBOUND_RPS="1000000", DATABASE_URL=os.environ.get("DATABASE_URL", ""))
        for app, port in servers.values():
            run.start_server(app, port, env, args.web_concurrency)
        for round_number in range(args.rounds):
            for name, (_app, port) in servers.items():
                build = post_json("/api/v1/conversations", f"{HOST}:{port}", body)
                results.setdefault((name, "closed"), []).append(
                    closed_loop(HOST, port, build, args.seconds, args.concurrency)
                )
                results.setdefault((name, "open"), []).append(open_loop(HOST, port, build, args.seconds, args.rate))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    print(
        f"rounds={args.rounds} seconds={args.seconds} concurrency={args.concurrency} rate={args.rate} "
        f"web-concurrency={args.web_concurrency} cpus={os.cpu_count()}"
    )
    print()
    print(
        f"| server | closed loop: 202/s | closed p50 ms | closed p99 ms | open loop {args.rate:.0f}/s: p50 ms | "
        "open p99 ms | non-202 |"
    )
    print("|---|---|---|---|---|---|---|")
    table = {}
    for name in servers:
        closed, opened = summary(results[(name, "closed")], 202), summary(results[(name, "open")], 202)
        table[name] = closed
        print(
            f"| {name} | {closed['rate']:.0f} | {closed['p50']:.1f} | {closed['p99']:.1f} | {opened['p50']:.1f} | "
            f"{opened['p99']:.1f} | {closed['other'] + opened['other']} |"
        )
    ratio = table["ingress"]["rate"] / table["bare falcon"]["rate"]
    print(f"\ningress throughput / bare falcon throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
