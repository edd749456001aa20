"""The call engine: a worker process's Grok calls in flight, as coroutines on one event loop.

A call takes seconds to tens of seconds, so by Little's law the calls in flight are the call rate times
the call time: 2,250 at 150 calls a second of 15 s. A thread each would be thousands of threads per
process, each with its stack, and Dramatiq's idle threads poll. Here a call in flight is a coroutine waiting
on its socket: a few kilobytes, no thread, no polling, no database connection. The shared gate alone sets
the pace, so the number in flight follows the latency Grok actually shows, whatever it is.

Who does what:

- a Dramatiq thread (``actors.analysis.analyze_batch``) reads a batch, waits for its place in the gate,
  claims it and :meth:`CallEngine.submit`\\ s its :class:`Job`, then takes its next message;
- the event loop sends the call and waits for the answer;
- a few threads (``finish_threads``) finish each call: read and store the answer, one transaction a batch,
  or handle the failure. They are few because that work is CPU and database, not waiting.

The loop also renews this worker's lease (``store.workers``) every third of ``LEASE_SECONDS``: while it
turns, the conversations this worker claimed stay its own, however long their calls take; if the process
dies, they go back to the queue once the lease lapses (``actors.reconciler``).

An engine may also be given ``max_lag``: how late its loop may run before it takes nothing more. Calls
that cost the process more CPU than it has (webhooks flat out: thousands of short requests) would otherwise
all be taken, each then waiting its turn on a loop seconds behind, and some would pass their timeout after
the answer had come. The loop times a short sleep every ``LAG_TICK_SECONDS``; while it wakes later than
``max_lag``, :meth:`CallEngine.submit` waits, so what is in flight follows what the process can finish
(Little's law with the process's own throughput), not a fixed capacity.

Stopping (:meth:`CallEngine.stop`): no new call is taken; calls in flight have ``grace`` seconds to answer,
those still open are cancelled and given back (``Job.give_back``), and only then is the lease released.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from store import workers
from store.db import call_and_release

logger = logging.getLogger(__name__)
# Calls are dealt round the clients: an httpx pool scans all its connections at every request and answer,
# so one pool of thousands costs the loop quadratically (measured: calls/s fell from 48 to 12 at 150
# calls/s of 15 s once every connection was kept); many small pools cost it linearly.
HTTP_CLIENTS = 32
LAG_TICK_SECONDS = 0.05  # how often the loop times itself, where a ``max_lag`` is set


@dataclass(frozen=True)
class Job:
    """One call: how to send it, what to do with its outcome (the answer, or the exception the send
    raised), how to give its batch back if the call is cancelled at shutdown, and what to do if ``finish``
    raised (the call was made: unlike a cancelled one, it counts)."""

    send: Callable[[httpx.AsyncClient], Awaitable[Any]]
    finish: Callable[[Any], None]
    give_back: Callable[[], None]
    crashed: Callable[[Exception], None]


class CallEngine:
    """An event loop in a thread of its own, with a pool of threads to finish calls."""

    def __init__(
        self,
        worker: str | None,
        lease_seconds: float,
        make_http: Callable[[], httpx.AsyncClient] | None,
        capacity: int,
        finish_threads: int = 4,
        http_clients: int = HTTP_CLIENTS,
        max_lag: float | None = None,
    ) -> None:
        """``make_http`` makes the HTTP clients the calls go through; ``None`` where nothing is called
        (offline: the engine only keeps the worker's lease). Without a ``worker`` no lease is kept (the
        webhooks' engine, ``actors.webhooks``: their deliveries hold leases of their own)."""
        self.worker, self.lease_seconds, self.make_http = worker, lease_seconds, make_http
        self.http_clients = http_clients
        self.max_lag, self.lag = max_lag, 0.0  # seconds: the limit, and how late the loop's last tick woke
        self.tick_due = float("inf")  # when the loop's next tick should wake (monotonic)
        self.slots = threading.BoundedSemaphore(capacity)  # a memory bound; the gate sets the pace
        self.finishers = concurrent.futures.ThreadPoolExecutor(finish_threads, thread_name_prefix="finish")
        self.leaser = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lease")  # never behind a store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run_loop, name="calls", daemon=True)
        self.tasks: dict[asyncio.Task, Job] = {}
        self.ready = threading.Event()
        self.stopping = False
        self.sent = 0

    @property
    def in_flight(self) -> int:
        return len(self.tasks)

    @property
    def behind(self) -> float:
        """How late the loop runs (where it is timed): its last tick's delay, or how overdue its next is."""
        return max(self.lag, time.monotonic() - self.tick_due)

    def start(self) -> None:
        """Start the loop (its HTTP clients made first: seconds on a busy machine), then take the lease
        (before any claim is made under it) and have the loop renew it from now on. Taken before the
        clients were made, a short lease lapsed before its first renewal, and the worker's first claims
        were sent again."""
        self.thread.start()
        self.ready.wait()
        if self.worker is not None:
            call_and_release(workers.renew, self.worker, self.lease_seconds)
            self.renewal = asyncio.run_coroutine_threadsafe(self._renew_lease(), self.loop)

    def submit(self, job: Job, wait: float | None = None) -> bool:
        """Start ``job``'s call on the loop; from any thread, without waiting for the loop to take it (a
        loop busy with thousands of calls would hold the caller). Waits while ``capacity`` calls are open,
        at most ``wait`` seconds when given: then it answers ``False`` and starts nothing."""
        if self.stopping:
            raise RuntimeError("the call engine is stopping")
        deadline = None if wait is None else time.monotonic() + wait
        while self.max_lag is not None and self.behind > self.max_lag:  # the loop must catch up first
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(LAG_TICK_SECONDS)
        if not self.slots.acquire(timeout=None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        self.loop.call_soon_threadsafe(self._start, job)
        return True

    def stop(self, grace: float) -> None:
        """Let the calls in flight answer for up to ``grace`` seconds, give the others back, release the lease."""
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._drain(grace), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.finishers.shutdown(wait=True)
        if self.worker is not None:
            call_and_release(workers.release, self.worker)
        self.leaser.shutdown(wait=True)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.clients = [self.make_http() for _ in range(self.http_clients)] if self.make_http else []
        if self.max_lag is not None:
            self.watch = self.loop.create_task(self._watch_lag())
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()

    def _start(self, job: Job) -> None:
        task = self.loop.create_task(self._call(job))
        self.tasks[task] = job
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.pop(task, None)
        self.slots.release()

    async def _call(self, job: Job) -> None:
        self.sent += 1
        try:
            outcome = await job.send(self.clients[self.sent % len(self.clients)])
        except asyncio.CancelledError:
            await self.loop.run_in_executor(self.finishers, job.give_back)
            raise
        except Exception as error:
            outcome = error
        await self.loop.run_in_executor(self.finishers, self._finish, job, outcome)

    @staticmethod
    def _finish(job: Job, outcome: Any) -> None:
        try:
            call_and_release(job.finish, outcome)
        except Exception as error:  # not left claimed under a live lease (nobody would take it back)
            try:
                call_and_release(job.crashed, error)
            except Exception:  # the database away too: the reconciler takes back claims older than any call
                logger.exception("a call's finish failed, and so did handing its batch on")

    async def _renew_lease(self) -> None:
        """Every third of the lease, from this loop: a loop that no longer turns loses its claims."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.loop.run_in_executor(
                    self.leaser, call_and_release, workers.renew, self.worker, self.lease_seconds
                )
            except Exception:  # the database away: try again; if it stays away, the lease lapses
                logger.exception("renewing the worker's lease failed")

    async def _watch_lag(self) -> None:
        """Time a short sleep, over and over: how late it wakes is how far behind the loop runs."""
        while True:
            self.tick_due = time.monotonic() + LAG_TICK_SECONDS
            await asyncio.sleep(LAG_TICK_SECONDS)
            self.lag = time.monotonic() - self.tick_due

    async def _drain(self, grace: float) -> None:
        self.stopping = True
        if self.tasks:
            logger.info("stopping: %d call(s) in flight get %.0f s to answer", len(self.tasks), grace)
            await asyncio.wait(list(self.tasks), timeout=grace)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks))
        if self.worker is not None:
            self.renewal.cancel()
        if self.max_lag is not None:
            self.watch.cancel()
        for client in self.clients:
            await client.aclose()
