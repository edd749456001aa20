"""The worker process: ``dramatiq actors`` with enough threads for the outbound limit.

A Grok call of a batch takes seconds to tens of seconds, so by Little's law the calls in flight are the
call rate times the call time: ``OUTBOUND_RPS`` x ``GROK_READ_TIMEOUT_SECONDS`` (the longest a call may
take) keeps the limit busy even when every call is that slow. ``WORKER_THREADS`` (0, the default) is
that number plus a few for collecting and storing; a thread waiting on the gate or on Grok costs a little
memory and no database connection (``store.db.release``). Offline, a handful of threads suffice.

The Procfile's ``worker`` and ``scripts/run`` start it; ``WORKER_PROCESSES`` sets the processes.
"""

from __future__ import annotations

import os
import sys

from settings import Settings, settings_or_exit

HOUSEKEEPING_THREADS = 8  # collect, flush and store messages beside the calls
IDLE_POLL_MS = "100"  # how long an idle consumer waits before asking Redis again (Dramatiq's default: 1000)


def thread_count(settings: Settings) -> int:
    """``WORKER_THREADS``, or enough for ``OUTBOUND_RPS`` calls a second that last up to the read timeout."""
    if settings.worker_threads:
        return settings.worker_threads
    if settings.offline:
        return HOUSEKEEPING_THREADS
    return settings.calls_in_flight + HOUSEKEEPING_THREADS


def command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "dramatiq", "actors",
            "--processes", str(settings.worker_processes), "--threads", str(thread_count(settings))]


def main() -> None:
    settings = settings_or_exit()
    os.environ.setdefault("dramatiq_worker_timeout", IDLE_POLL_MS)  # read by dramatiq.worker at import
    # glibc gives each thread that allocates an arena of its own (up to 8 per core): hundreds of threads
    # would hold hundreds of MB of fragmented heap. Two arenas serve them as well; read at process start.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    argv = command(settings)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
