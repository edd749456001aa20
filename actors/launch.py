"""The worker process: ``dramatiq actors.worker:setup`` with a few threads; the calls in flight are not threads.

A Grok call takes seconds to tens of seconds, so by Little's law thousands may be in flight at once
(``OUTBOUND_RPS`` x the call time). They wait as coroutines on each process's event loop
(``actors.calls``), not in threads: a thread only reads a batch, waits for its slot in the gate (the
threads' waits interleave, so a few keep any rate busy), claims it and hands it on. ``WORKER_THREADS``
(0, the default) is ``DEFAULT_THREADS``.

The Procfile's ``worker`` and ``scripts/run`` start it; ``WORKER_PROCESSES`` sets the processes.
"""

from __future__ import annotations

import os
import sys

from settings import Settings, settings_or_exit

DEFAULT_THREADS = 16  # hand calls on, collect, flush and store; measured in BENCHMARKS.md (worker side)
IDLE_POLL_MS = "100"  # how long an idle consumer waits before asking Redis again (Dramatiq's default: 1000)


def thread_count(settings: Settings) -> int:
    """``WORKER_THREADS``, or :data:`DEFAULT_THREADS`."""
    return settings.worker_threads or DEFAULT_THREADS


def command(settings: Settings) -> list[str]:
    """Dramatiq's CLI, which calls ``actors.worker.setup`` in each worker process before it consumes."""
    return [
        sys.executable,
        "-m",
        "dramatiq",
        "actors.worker:setup",
        "--processes",
        str(settings.worker_processes),
        "--threads",
        str(thread_count(settings)),
    ]


def main() -> None:
    settings = settings_or_exit()
    os.environ.setdefault("dramatiq_worker_timeout", IDLE_POLL_MS)  # read by dramatiq.worker at import
    argv = command(settings)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
