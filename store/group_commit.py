"""Group commit: concurrent writes from the event loop share one transaction per round.

Each request awaits :meth:`GroupCommitter.submit`. A single writer thread takes everything that is
waiting, writes it in one call (one transaction, one fsync) and answers every request; what arrives
meanwhile waits for the next round. Under load rounds grow on their own, so throughput rises with
concurrency instead of collapsing into lock contention between threads, and no request waits longer
than one round beyond its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class GroupCommitter(Generic[Item, Outcome]):
    """Runs ``write_batch(items) -> outcomes`` (same order) in one thread, a round at a time."""

    def __init__(self, write_batch: Callable[[list[Item]], list[Outcome]], max_batch: int = 500) -> None:
        self.write_batch = write_batch
        self.max_batch = max_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="group-commit")
        self.pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self.drainer: asyncio.Task | None = None

    async def submit(self, item: Item) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if self.drainer is None:
            self.drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
                try:
                    outcomes = await loop.run_in_executor(self.executor, self.write_batch, [item for item, _ in batch])
                except Exception as error:
                    for _item, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_item, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():  # the client may have gone away; the write stands
                        future.set_result(outcome)
        finally:
            self.drainer = None
