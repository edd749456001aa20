"""Webhook benchmark: deliveries per second to a local receiver, and the time from completion to webhook.

Both parts run the real worker (offline analyzer: no Grok key) against the receiver test double
(``testing/receiver.py``) over HTTPS, its certificate from a throwaway trustme authority that the worker
trusts through ``WEBHOOK_CA_FILE``, ``localhost`` allow-listed (``WEBHOOK_ALLOW_HOSTS``), the receiver
answering after ``--latency-ms``, a share ``--fail-rate`` of requests answered 500.

``--part deliveries`` (per round: a fresh subscription of ``--batch-size``, ``--deliveries`` pending
``conversation.completed`` deliveries written to the outbox as the result writer writes them, then a worker
started and timed until every one is ``delivered``): requests and events a second as the receiver saw them
(first to last arrival), the most requests in any 1-s window (against ``--rps``, the service's
``WEBHOOK_RPS``), the worker's CPU seconds per 1,000 deliveries and the receiver's cores. Medians of
``--rounds``.

``--part latency``: web and worker, a subscription made through the API (batch size 1), conversations posted
one by one at ``--rate`` a second for ``--seconds``; each event's latency is its first 2xx arrival at the
receiver less its ``data.insight.analyzed_at`` (one machine, one clock). Waits until every event is
delivered, at most ``--timeout`` seconds (and no longer once the rest are due only after it); an event
not delivered counts as infinitely late. The retry schedule is the default unless ``--retry-schedule``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from datetime import timedelta

import httpx

from benchmarks.emulator_log import max_in_any_window
from benchmarks.harness import HOST, Run, add_database_options, body, cpu_seconds, postgres_server
from benchmarks.harness import worker_processes as worker_side
from benchmarks.webhook_load import (
    Receiver,
    epoch,
    fill_outbox,
    first_accepted,
    median_of,
    open_store,
    percentile,
    seconds,
    sql,
    subscribe,
)
from local.supervisor import stop_all
from store import deliveries, subscriptions
from store.db import release
from store.queries import utcnow
from webhooks import events

RECEIVER_PORT, WEB_PORT = 8611, 8612
DELIVERED_SQL = "SELECT COUNT(*) FROM webhook_deliveries WHERE subscription_id = ? AND status = 'delivered'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["deliveries", "latency"], default="deliveries")
    parser.add_argument("--deliveries", type=int, default=20_000, help="deliveries in the outbox a round")
    parser.add_argument("--batch-size", type=int, default=1, help="the subscription's batch_size (deliveries)")
    parser.add_argument("--rps", type=int, default=50, help="WEBHOOK_RPS, requests a second a subscription")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20, help="conversations posted a second (latency)")
    parser.add_argument("--seconds", type=float, default=30, help="how long they are posted (latency)")
    parser.add_argument("--latency-ms", type=float, default=50, help="the receiver's time to answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests the receiver answers 500")
    parser.add_argument("--retry-schedule", default="", help="WEBHOOK_RETRY_SCHEDULE (default: the service's)")
    parser.add_argument("--timeout", type=float, default=480, help="seconds to wait for every delivery")
    add_database_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-webhooks-", postgres=postgres_server(args)) as run:
        receiver = Receiver(
            run, RECEIVER_PORT, "--latency-ms", str(args.latency_ms), "--fail-rate", str(args.fail_rate)
        )
        env = run.env(
            GROK_API_KEY="",
            WEBHOOK_RPS=str(args.rps),
            WEBHOOK_ALLOW_HOSTS="localhost",
            WEBHOOK_CA_FILE=str(receiver.ca_file),
            **({"WEBHOOK_RETRY_SCHEDULE": args.retry_schedule} if args.retry_schedule else {}),
        )
        open_store(env)
        print(
            f"part={args.part} database={args.database} latency_ms={args.latency_ms} fail_rate={args.fail_rate} "
            f"WEBHOOK_RPS={args.rps}",
            end=" ",
        )
        if args.part == "deliveries":
            print(f"batch_size={args.batch_size} deliveries={args.deliveries} rounds={args.rounds}\n")
            report_deliveries([delivery_round(run, receiver, env, args, n) for n in range(args.rounds)], args)
        else:
            print(f"rate={args.rate}/s seconds={args.seconds} timeout={args.timeout}\n")
            latency_run(run, receiver, env, args)


def delivery_round(run: Run, receiver: Receiver, env: dict[str, str], args: argparse.Namespace, n: int) -> dict:
    """One round: fill the outbox, start a worker, time it until all are delivered; the round's figures."""
    subscription = subscribe(receiver.url, args.batch_size)
    fill_outbox(args.deliveries)
    receiver.reset()
    started = time.time()
    worker = run.start_worker(env)
    samples = []  # (time, delivered, worker CPU s, receiver CPU s)
    while time.time() - started < args.timeout:
        time.sleep(0.5)
        delivered = sql(DELIVERED_SQL, subscription)[0][0]
        samples.append((time.time(), delivered, cpu_seconds(worker_side(worker)), cpu_seconds([receiver.psutil])))
        if delivered >= args.deliveries:
            break
    records, stats = receiver.received(), receiver.stats()
    stop_all([worker])
    subscriptions.remove(subscription)
    release()
    arrivals = sorted(record["t"] for record in records)
    window = max(1e-9, arrivals[-1] - arrivals[0])
    busy = [sample for sample in samples if sample[1] > 0]
    first, last = busy[0], busy[-1]
    done = max(1, last[1] - first[1])
    row = {
        "requests/s": (len(arrivals) - 1) / window,
        "events/s": (stats["accepted_events"] - args.batch_size) / window,
        "max requests in 1 s": max_in_any_window(arrivals),
        "s to all delivered": last[0] - started,
        "s to first arrival": arrivals[0] - started,
        "worker CPU s / 1,000": (last[2] - first[2]) / done * 1000,
        "worker cores": (last[2] - first[2]) / max(1e-9, last[0] - first[0]),
        "receiver cores": (last[3] - first[3]) / max(1e-9, last[0] - first[0]),
        "delivered": last[1],
        "duplicates": stats["duplicates"],
        "non-2xx": sum(n for status, n in stats["by_status"].items() if not status.startswith("2")),
    }
    print(f"round {n + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.items()), file=sys.stderr, flush=True)
    return row


def report_deliveries(rows: list[dict], args: argparse.Namespace) -> None:
    print("| measure | median | rounds |")
    print("|---|---|---|")
    for key in rows[0]:
        values = " / ".join(f"{row[key]:,.2f}".removesuffix(".00") for row in rows)
        print(f"| {key} | {median_of(rows, key):,.2f} | {values} |".replace(".00 |", " |"))


def latency_run(run: Run, receiver: Receiver, env: dict[str, str], args: argparse.Namespace) -> None:
    """Web and worker; conversations posted steadily; wait for their webhooks; the latency table."""
    run.start_server("ingress:app", WEB_PORT, env)
    client = httpx.Client(base_url=f"http://{HOST}:{WEB_PORT}", timeout=30)
    made = client.post("/api/v1/webhooks", json={"url": receiver.url, "events": [events.COMPLETED], "batch_size": 1})
    made.raise_for_status()
    worker = run.start_worker(env)
    time.sleep(8)  # the worker is up (and its dispatcher polling) before the first conversation
    posted, refused = post_steadily(client, args.rate, args.seconds)
    expected = posted - refused  # one conversation.completed each
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        time.sleep(1)
        found = Counter(deliveries.counts())
        later = sql(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at > ?",
            utcnow() + timedelta(seconds=deadline - time.time()),
        )[0][0]
        release()
        if found["delivered"] + later >= expected:
            break  # all delivered, or the rest are due only after the timeout
    tries = sql("SELECT status, attempts, COUNT(*) FROM webhook_deliveries GROUP BY status, attempts ORDER BY 1, 2")
    cpu = cpu_seconds(worker_side(worker))
    accepted = first_accepted(receiver.received())
    stats = receiver.stats()
    late = [t - epoch(event["data"]["insight"]["analyzed_at"]) for t, event, _ in accepted.values()]
    late += [math.inf] * (expected - len(accepted))
    first_try = sum(1 for *_, first in accepted.values() if first) / max(1, expected)
    print(
        "| conversations posted (non-202) | events delivered | delivered on the first attempt "
        "| p50 | p90 | p95 | p99 | max |"
    )
    print("|---|---|---|---|---|---|---|---|")
    shares = [percentile(late, share) for share in (0.5, 0.9, 0.95, 0.99, 1.0)]
    print(f"| {posted} ({refused}) | {len(accepted)} | {first_try:.1%} | " + " | ".join(map(seconds, shares)) + " |")
    print(f"\nreceiver: {stats}")
    print(f"deliveries by (status, failed attempts): {tries}; worker CPU {cpu:.1f} s")


def post_steadily(client: httpx.Client, rate: float, duration: float) -> tuple[int, int]:
    """Post conversations one by one on a fixed schedule; how many were posted, how many not answered 202."""
    count, refused, started = int(rate * duration), 0, time.time()
    for n in range(count):
        time.sleep(max(0.0, started + n / rate - time.time()))
        answer = client.post("/api/v1/conversations", content=body(n), headers={"content-type": "application/json"})
        refused += answer.status_code != 202
    print(f"posted {count} conversations in {time.time() - started:.1f} s", file=sys.stderr, flush=True)
    return count, refused


if __name__ == "__main__":
    main()
