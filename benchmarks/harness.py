"""What every benchmark shares: a run's scratch space and the system's processes, the figures read from
them, and the requests and conversations they are sent.

A benchmark opens one :class:`Run` (``with Run("bench-x-") as run:``): a scratch folder, the Redis of
``REDIS_URL`` (else an embedded one), optionally a scratch PostgreSQL database, and the processes it starts
through it (web, worker, xAI emulator). Leaving the ``with`` undoes all of it, in reverse: the processes and
their process groups are stopped, the database dropped, Redis stopped, the folder removed. Nothing here
runs at import. ``benchmarks.loadgen`` (the HTTP load driver) and ``benchmarks.bare_app`` (the baseline
endpoint) complete the harness; benchmark modules import these, never each other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg2

from insights.analyzer import ConversationToAnalyze
from local.embedded_redis import EmbeddedRedis
from local.supervisor import ROOT, stop_all, worker_command
from store.db import make_url

HOST = "127.0.0.1"
KEY = "bench-key"  # the xAI key the emulator accepts and the service is given
START_TIMEOUT_SECONDS = 30
CLUSTERS = [
    "billing",
    "refund",
    "late-delivery",
    "damaged-item",
    "account-access",
    "cancellation",
    "subscription",
    "shipping-cost",
    "product-question",
    "complaint",
    "praise",
    "other",
]


class Run:
    """One benchmark run's scratch space and processes, all undone on leaving the ``with`` block.

    ``redis``: give the run a Redis (``REDIS_URL`` when set, else an embedded redis-server); ``postgres``:
    a PostgreSQL server URL on which a scratch database is made for the run (else SQLite at ``db_path``).
    """

    def __init__(self, prefix: str = "bench-", *, redis: bool = True, postgres: str = "") -> None:
        self.prefix, self.wants_redis, self.postgres = prefix, redis, postgres
        self.processes: list[subprocess.Popen] = []
        self.redis_url = self.database_url = ""
        self._undo = contextlib.ExitStack()

    def __enter__(self) -> Run:
        with contextlib.ExitStack() as stack:  # undoes what was made if a later step fails
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix=self.prefix, ignore_cleanup_errors=True))
            self.directory = Path(folder)
            if self.wants_redis:
                self.redis_url = os.environ.get("REDIS_URL") or embedded_redis(stack)
            if self.postgres:
                self.database_url = stack.enter_context(scratch_postgres(self.postgres))
            stack.callback(lambda: stop_all(self.processes[::-1]))
            self._undo = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._undo.close()

    @property
    def db_path(self) -> Path:
        return self.directory / "bench.db"

    def env(self, **overrides: str) -> dict[str, str]:
        """The environment of the system's processes: this run's Redis and database, then ``overrides``."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DB_PATH": str(self.db_path), "DATABASE_URL": self.database_url}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return {**env, **overrides}

    def start(self, command: list[str], env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
        """``command`` from the repository root, stopped with the run (its process group too, if it leads one)."""
        process = subprocess.Popen(command, cwd=ROOT, env=env, **popen)
        self.processes.append(process)
        return process

    def start_emulator(self, port: int, *options: str) -> subprocess.Popen:
        """``testing.emulator`` on ``port``, taking ``KEY``, with ``options``; returns once it answers."""
        command = [sys.executable, "-m", "testing.emulator", "--port", str(port), "--api-key", KEY, *options]
        process = self.start(command, stdout=subprocess.DEVNULL)
        wait_until_up(process, f"http://{HOST}:{port}/_emulator/log")
        return process

    def start_server(self, app: str, port: int, env: dict[str, str], workers: int = 1) -> subprocess.Popen:
        """``app`` under uvicorn on ``port``; returns once it answers."""
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ]
        process = self.start(command, env)
        wait_until_up(process, f"http://{HOST}:{port}/healthz")  # any answer (the bare app's is 404) will do
        return process

    def start_worker(self, env: dict[str, str]) -> subprocess.Popen:
        """The worker command as the Procfile runs it, in its own process group; its output goes to
        ``BENCH_WORKER_LOG`` when set (to look into a run), else nowhere."""
        output = self._undo.enter_context(open(os.environ.get("BENCH_WORKER_LOG", os.devnull), "ab"))
        return self.start(worker_command(), env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """``--database sqlite|postgres`` and the server of ``--database postgres`` (see :func:`postgres_server`)."""
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server for --database postgres; a scratch database is made on it",
    )


def postgres_server(args: argparse.Namespace) -> str:
    """The ``postgres`` of a :class:`Run` for those options: the server, or "" for SQLite."""
    return args.postgres_url if args.database == "postgres" else ""


def embedded_redis(stack: contextlib.ExitStack) -> str:
    """An embedded redis-server stopped with ``stack``; its URL."""
    server = EmbeddedRedis()
    stack.callback(server.stop)
    return server.url


def wait_until_up(process: subprocess.Popen, url: str) -> None:
    """Poll ``url`` until anything answers; fail if ``process`` exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        try:
            httpx.get(url)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{' '.join(map(str, process.args))} did not answer at {url}")


@contextlib.contextmanager
def scratch_postgres(server_url: str) -> Iterator[str]:
    """A database made for one run on the PostgreSQL server of ``server_url``, dropped after it; its URL."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    administer(server_url, f"CREATE DATABASE {name}")
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        administer(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def administer(server_url: str, statement: str) -> None:
    """Run ``statement`` outside a transaction in the ``postgres`` database of ``server_url``'s server."""
    admin = psycopg2.connect(**{**make_url(server_url), "database": "postgres"})
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(statement)
    finally:
        admin.close()


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the process group ``process`` leads (a worker command and its forked processes); reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants."""
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def worker_processes(process: subprocess.Popen) -> list[psutil.Process]:
    """The Dramatiq worker processes under a worker command (not their fork-pool helpers); none once it is gone."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "ForkProcess" not in " ".join(child.cmdline())]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds of ``processes`` so far."""
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def body(n: int) -> bytes:
    """The n-th conversation as ingress takes it: two messages and metadata, as JSON."""
    return json.dumps(
        {
            "messages": [
                {"role": "customer", "content": f"Order {n} arrived late and the box was damaged."},
                {"role": "agent", "content": "Sorry about that, a replacement is on its way."},
            ],
            "metadata": {"channel": "chat", "n": n},
        }
    ).encode()


OPENINGS = [
    "I was charged twice for my subscription this month",
    "My parcel says delivered but nothing arrived",
    "I can't log in since the last update, it says my password is wrong",
    "The app crashes when I open settings",
    "Please cancel my account and stop all payments",
    "I'd love a dark mode, the white screen hurts at night",
    "The blender I received is damaged, I want to return it",
]
FOLLOW_UPS = [
    "Thanks for getting back to me.",
    "That still doesn't work.",
    "Can you check again? Order number is 48213.",
    "I've been waiting for a week now.",
    "OK, that fixed it, thank you!",
    "This is the third time I'm writing.",
]
REPLIES = [
    "Sorry about that, let me look into it.",
    "I've issued a refund, it takes 3-5 business days.",
    "Could you send a screenshot of the error?",
    "I've escalated this to our technical team.",
]


def conversations(count: int, seed: int) -> list[ConversationToAnalyze]:
    """``count`` support conversations of 2 to 8 messages, the same for the same ``seed``."""
    draw = random.Random(seed)
    made = []
    for n in range(count):
        messages = [{"role": "customer", "content": draw.choice(OPENINGS)}]
        for turn in range(draw.randint(1, 7)):
            role, pool = ("agent", REPLIES) if turn % 2 == 0 else ("customer", FOLLOW_UPS)
            messages.append({"role": role, "content": draw.choice(pool)})
        made.append(ConversationToAnalyze(f"conv_{n:06d}", messages))
    return made
