"""Emulator benchmark: can the xAI emulator hold the calls in flight that the workers will keep open?

Starts ``testing.emulator`` (``--latency-median``, ``--latency-sigma``, capped at ``--latency-cap`` times
the median so that a run ends) and sends it chat-completion calls shaped as the workers send them
(``insights.grok.GrokClient.request_body``: the system prompt, then ``{"conversations": [...]}`` with
``--batch`` conversations of three messages) at a fixed ``--rate`` for ``--seconds``, from one
``httpx.AsyncClient`` on loopback, then waits for the calls still open. Each call's conversations are new
texts unless ``--texts N`` draws them from N texts (as retries and repeated templates would).

Reports calls sent and answered per second, errors, how late answers came beyond the latency the
emulator drew for them (its log, matched by conversation id), and the emulator's resident memory and CPU
(``psutil``): CPU seconds per call, and cores used while calls were being sent. Bounded: at most
``--rate`` x ``--seconds`` calls, and the wait for open calls ends ``--latency-cap`` medians + 10 s after
the last one was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field

import httpx
import psutil
import uvloop

from benchmarks.harness import HOST, KEY, Run, cpu_seconds
from insights.analyzer import ConversationToAnalyze
from insights.grok import GrokClient
from settings import load_settings

OPENINGS = (
    "Order {n} arrived late and the box was damaged.",
    "I was charged twice for invoice {n}, please refund me.",
    "Thanks, the replacement for order {n} works great!",
    "Why is my account {n} locked again? This is awful.",
    "Can I change the delivery address of order {n}?",
)
REPLY = "Sorry about that, I have looked into case {n} and a fix is on its way."
CLOSINGS = ("Thanks, that helps.", "Still not fixed, I am disappointed.", "OK.", "Great, much appreciated!")


@dataclass
class Tally:
    """What the client saw: per call (first conversation id) its elapsed seconds; statuses and errors."""

    elapsed: dict[str, float] = field(default_factory=dict)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    open_calls: int = 0
    peak_open: int = 0


def conversations(call: int, size: int, texts: int) -> list[ConversationToAnalyze]:
    """``size`` conversations with ids unique to the call; their words new, or among ``texts`` ones."""
    batch = []
    for k in range(size):
        n = call * size + k
        m = n % texts if texts else n
        batch.append(
            ConversationToAnalyze(
                f"call{call}-{k}",
                [
                    {"role": "customer", "content": OPENINGS[m % len(OPENINGS)].format(n=m)},
                    {"role": "agent", "content": REPLY.format(n=m)},
                    {"role": "customer", "content": CLOSINGS[m % len(CLOSINGS)]},
                ],
            )
        )
    return batch


async def one_call(client: httpx.AsyncClient, url: str, body: bytes, call_id: str, tally: Tally) -> None:
    tally.open_calls += 1
    tally.peak_open = max(tally.peak_open, tally.open_calls)
    started = time.monotonic()
    try:
        answer = await client.post(url, content=body)
        await answer.aread()
        tally.statuses[answer.status_code] += 1
        if answer.status_code == 200:
            tally.elapsed[call_id] = time.monotonic() - started
    except httpx.HTTPError as error:
        tally.errors[type(error).__name__] += 1
    finally:
        tally.open_calls -= 1


async def send_at_rate(args: argparse.Namespace, url: str, tally: Tally) -> float:
    """Sends ``rate`` x ``seconds`` calls on schedule, waits for the open ones; the seconds spent sending."""
    grok = GrokClient(load_settings({}), gate=None)  # type: ignore[arg-type]  # only its request_body is used
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(args.latency_cap * args.latency_median + 30, connect=30)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    tasks = set()
    clients = [httpx.AsyncClient(limits=limits, timeout=timeout, headers=headers) for _ in range(args.clients)]
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        start = time.monotonic()
        for call in range(int(args.rate * args.seconds)):
            delay = start + call / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if tally.open_calls >= args.max_open:  # the client would run out of descriptors: not sent
                tally.errors["not sent, too many open"] += 1
                continue
            batch = conversations(call, args.batch, args.texts)
            body = json.dumps(grok.request_body(batch)).encode()
            task = asyncio.create_task(
                one_call(clients[call % len(clients)], url, body, batch[0].conversation_id, tally)
            )
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sending = time.monotonic() - start
        if tasks:
            await asyncio.wait(tasks, timeout=args.latency_cap * args.latency_median + 10)
        for task in tasks:
            task.cancel()
    return sending


async def sample_memory(process: psutil.Process, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(process.memory_info().rss)
        await asyncio.sleep(1)


async def measure(args: argparse.Namespace, emulator: psutil.Process, tally: Tally) -> dict[str, float]:
    """Runs the load; the emulator's CPU seconds while sending and in all, its largest RSS, wall seconds."""
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(emulator, samples, stop))
    cpu_before = cpu_seconds([emulator])
    started = time.monotonic()
    url = f"http://{HOST}:{args.port}/v1/chat/completions"
    sending = await send_at_rate(args, url, tally)
    stop.set()
    await sampler
    cpu = cpu_seconds([emulator]) - cpu_before
    return {"sending": sending, "cpu": cpu, "rss": max(samples), "wall": time.monotonic() - started}


def read_log(port: int) -> list[dict]:
    """The emulator's log, or nothing when it cannot give it within a minute (the report says so)."""
    try:
        return httpx.get(f"http://{HOST}:{port}/_emulator/log", timeout=60).json()
    except httpx.HTTPError as error:
        print(f"the emulator's log could not be read: {type(error).__name__}")
        return []


def report(args: argparse.Namespace, tally: Tally, figures: dict[str, float], log: list[dict]) -> None:
    drawn = {entry["ids"][0]: entry["latency"] for entry in log if entry.get("ids")}
    late = sorted(elapsed - drawn[call] for call, elapsed in tally.elapsed.items() if call in drawn)
    sent = int(args.rate * args.seconds)
    answered = tally.statuses.get(200, 0)
    client_cpu = cpu_seconds([psutil.Process()])
    print(
        f"\n| rate {args.rate:g}/s, latency median {args.latency_median:g} s (sigma {args.latency_sigma:g}), "
        f"{args.seconds:g} s, batch {args.batch}, texts {args.texts or 'all new'} | value |"
    )
    print("|---|---|")
    others, errors = sum(n for s, n in tally.statuses.items() if s != 200), sum(tally.errors.values())
    print(
        f"| calls scheduled / answered 200 / other statuses / errors / still open at the end | {sent} / {answered} / "
        f"{others} / {errors} {dict(tally.errors) or ''} / {sent - answered - others - errors} |"
    )
    print(f"| calls scheduled per second (asked {args.rate:g}) | {sent / figures['sending']:.1f} |")
    print(f"| answered per second (answers / seconds sending) | {answered / figures['sending']:.1f} |")
    print(f"| calls open at once, most | {tally.peak_open} |")
    if late:
        print(
            f"| lateness beyond the drawn latency: median / p99 / max | {statistics.median(late) * 1000:.0f} / "
            f"{late[int(0.99 * (len(late) - 1))] * 1000:.0f} / {late[-1] * 1000:.0f} ms |"
        )
    print(f"| emulator RSS, largest | {figures['rss'] / 2**20:.0f} MB |")
    print(
        f"| emulator CPU: per call / cores over the run | {figures['cpu'] / max(1, sent) * 1000:.2f} ms / "
        f"{figures['cpu'] / figures['wall']:.2f} |"
    )
    print(f"| load generator CPU (this process), all | {client_cpu:.0f} s |")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with Run("bench-emulator-", redis=False) as run:
        process = run.start_emulator(
            args.port,
            "--latency-median",
            str(args.latency_median),
            "--latency-sigma",
            str(args.latency_sigma),
            "--latency-max",
            str(args.latency_cap * args.latency_median),
        )
        tally = Tally()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # uvloop: the client's own CPU is the limit
            figures = runner.run(measure(args, psutil.Process(process.pid), tally))
        report(args, tally, figures, read_log(args.port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=150, help="calls sent per second")
    parser.add_argument("--seconds", type=float, default=60, help="how long calls are sent")
    parser.add_argument("--latency-median", type=float, default=15, help="the emulator's median latency, seconds")
    parser.add_argument("--latency-sigma", type=float, default=0.5, help="shape of its lognormal latency")
    parser.add_argument(
        "--latency-cap", type=float, default=4, help="latency capped at this many medians (ends the run)"
    )
    parser.add_argument("--batch", type=int, default=20, help="conversations per call")
    parser.add_argument(
        "--texts", type=int, default=0, help="distinct conversation texts to draw from (0: every one new)"
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=64,
        help="httpx clients the calls take turns on (a pool scans all its connections at each call)",
    )
    parser.add_argument(
        "--max-open", type=int, default=18000, help="calls open at once, at most (ulimit -n is the bound)"
    )
    parser.add_argument("--port", type=int, default=8331)
    return parser


if __name__ == "__main__":
    main()
