"""A small HTTP/1.1 load driver on asyncio streams, fast enough to load a local server from one core.

Two modes: *closed loop* (``concurrency`` connections each sending as soon as the previous answer came,
for maximum throughput) and *open loop* (requests scheduled at a fixed ``rate``; latency counts from the
scheduled time, so a stalled server cannot hide its queueing delay: no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RequestFactory = Callable[[int], bytes]


def post_json(path: str, host: str, body_for: Callable[[int], bytes]) -> RequestFactory:
    """A factory of raw ``POST`` requests whose n-th body is ``body_for(n)``."""

    def build(n: int) -> bytes:
        body = body_for(n)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    return build


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def count(self, status: int) -> int:
        return self.statuses.get(status, 0)

    def rate(self, status: int) -> float:
        return self.count(status) / self.seconds

    def percentile_ms(self, p: float) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=1000)[int(p * 10) - 1] * 1000


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _run(
    host: str, port: int, build: RequestFactory, seconds: float, concurrency: int, rate: float | None
) -> LoadResult:
    counter = itertools.count()
    result = LoadResult(seconds)
    start = time.perf_counter()
    stop = start + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                n = next(counter)
                scheduled = start + n / rate if rate else time.perf_counter()
                if scheduled >= stop:
                    return
                if rate and scheduled > time.perf_counter():
                    await asyncio.sleep(scheduled - time.perf_counter())
                try:
                    status = await _exchange(reader, writer, build(n))
                except (OSError, asyncio.IncompleteReadError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies.append(time.perf_counter() - scheduled)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def closed_loop(host: str, port: int, build: RequestFactory, seconds: float, concurrency: int) -> LoadResult:
    """As fast as the server answers, over ``concurrency`` keep-alive connections."""
    return asyncio.run(_run(host, port, build, seconds, concurrency, None))


def open_loop(
    host: str, port: int, build: RequestFactory, seconds: float, rate: float, concurrency: int = 64
) -> LoadResult:
    """``rate`` requests a second on schedule, whatever the server's pace (up to ``concurrency`` in flight)."""
    return asyncio.run(_run(host, port, build, seconds, concurrency, rate))
