"""``scripts/run``: the whole system in the foreground (web + worker, embedded defaults) until Ctrl-C.

With no ``REDIS_URL`` it starts an embedded Redis shared by both processes; with no ``DATABASE_URL`` the
database is SQLite at ``DB_PATH``. It outlives its children: when one exits, or on SIGINT/SIGTERM, it
stops the others, then the embedded Redis, and exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from local.embedded_redis import EmbeddedRedis
from settings.secrets import mask_url

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_SECONDS = 15


def web_command(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "api.serve", "--host", host, "--port", str(port), "--workers", "1"]


def worker_command() -> list[str]:
    """The worker launcher (``actors.launch``): processes and threads from the configuration."""
    return [sys.executable, "-m", "actors.launch"]


def stop_all(children: list[subprocess.Popen]) -> None:
    """SIGTERM every child still running, wait for them, then SIGKILL whatever is left of each one's
    process group (a Dramatiq worker's forked processes too), so nothing is orphaned."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        kill_group(child.pid)


def kill_group(leader: int) -> None:
    """SIGKILL what remains of the process group led by ``leader`` (children start their own session)."""
    try:
        os.killpg(leader, signal.SIGKILL)
    except ProcessLookupError:  # no such group: it ended whole, or the child never led one
        pass


def main() -> int:
    from settings import ConfigError, load_settings

    env = dict(os.environ)
    embedded = None
    if not env.get("REDIS_URL"):
        embedded = EmbeddedRedis(ROOT / "data" / "redis.rdb")
        env["REDIS_URL"] = embedded.url
    try:
        settings = load_settings(env)
    except ConfigError as error:
        if embedded:
            embedded.stop()
        print(f"configuration error: {error}", file=sys.stderr)
        return 2

    from store.db import describe, open_database
    from store.migrations import migrate

    migrate(open_database(settings))
    print(f"Conversation Insights on http://127.0.0.1:{settings.port}", flush=True)
    print(f"  Redis:    {'embedded, ' if embedded else ''}{mask_url(settings.redis_url)}", flush=True)
    print(f"  Database: {describe(settings)}", flush=True)
    print(f"  Analyzer: {'offline (no GROK_API_KEY)' if settings.offline else settings.grok_model}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)

    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    children = [
        subprocess.Popen(web_command(settings.port), cwd=ROOT, env=env, start_new_session=True),
        subprocess.Popen(worker_command(), cwd=ROOT, env=env, start_new_session=True),
    ]
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        stop_all(children)
        if embedded:
            embedded.stop()
    failed = [c for c in children if c.returncode not in (0, -signal.SIGTERM)]
    if not stopping and failed:
        print(f"stopped: {failed[0].args[2]} exited with {failed[0].returncode}", file=sys.stderr)
        return 1
    print("stopped cleanly.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
