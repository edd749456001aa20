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
import statistics
import time

import httpx

from benchmarks.harness import HOST, KEY, Run, body

EMULATOR_PORT, WEB_PORT = 8321, 8322


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="the emulator's answer time, seconds")
    parser.add_argument("--flush", type=float, default=2.0, help="BATCH_FLUSH_SECONDS")
    parser.add_argument("--conversations", type=int, default=10)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-lone-") as run:
        env = run.env(
            GROK_API_KEY=KEY, GROK_BASE_URL=f"http://{HOST}:{EMULATOR_PORT}/v1", BATCH_FLUSH_SECONDS=str(args.flush)
        )
        run.start_emulator(EMULATOR_PORT, "--latency", str(args.latency))
        run.start_server("ingress:app", WEB_PORT, env)
        run.start_worker(env)
        time.sleep(5)  # the worker boots
        waits = [lone_wait(n) for n in range(args.conversations)]
    target = args.flush + args.latency + 1
    print(f"latency={args.latency} BATCH_FLUSH_SECONDS={args.flush} conversations={args.conversations}")
    print(
        f"wait until completed: median {statistics.median(waits):.2f} s, slowest {max(waits):.2f} s "
        f"(target <= {target:.1f} s)"
    )


def lone_wait(n: int) -> float:
    client = httpx.Client(base_url=f"http://{HOST}:{WEB_PORT}", timeout=10)
    posted = time.monotonic()
    response = client.post("/api/v1/conversations", content=body(n), headers={"content-type": "application/json"})
    location = response.headers["location"]
    while client.get(location).json()["status"] != "completed":
        time.sleep(0.02)
    return time.monotonic() - posted


if __name__ == "__main__":
    main()
