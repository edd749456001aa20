"""Web and worker processes of the real service, each stack on a flushed Redis database of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from local.supervisor import kill_group, stop_all, web_command, worker_command
from support import ROOT, free_port, wait_until
from support.databases import fresh_redis_url


@dataclass
class Stack:
    """Web and worker processes of the real service, started with ``env``, stopped by :meth:`stop`."""

    env: dict[str, str]
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)

    def start_web(self) -> httpx.Client:
        port = free_port()
        process = self._spawn(web_command(port), f"web-{port}")
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"web exited with {process.returncode}: {self.log_text()}")
            try:
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"web did not become ready: {self.log_text()}")
            time.sleep(0.05)
        self.ports.append(port)
        return httpx.Client(base_url=base_url, timeout=10)

    def start_worker(self, processes: int = 1, threads: int | None = 4) -> subprocess.Popen:
        """The worker launcher (``actors.launch``) with ``processes`` and ``threads`` (``None``: its default,
        derived from the outbound limit); its Prometheus exposition listens on ``self.worker_metrics_port``."""
        self.worker_metrics_port = free_port()
        metrics_dir = self.logs / f"worker-metrics-{self.worker_metrics_port}"
        metrics_dir.mkdir()
        self.env.update(dramatiq_prom_port=str(self.worker_metrics_port), dramatiq_prom_db=str(metrics_dir))
        sizing = {"WORKER_PROCESSES": str(processes), "WORKER_THREADS": str(threads or 0)}
        return self._spawn(worker_command(), f"worker-{len(self.processes)}", sizing)

    def _spawn(self, command: list[str], name: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")
        env = {**os.environ, **self.env, **(extra_env or {}), "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a process and everything it started (a Dramatiq worker's forked processes too)."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def conversations(self, client: httpx.Client, ids: list[str]) -> list[dict]:
        return [client.get(f"/api/v1/conversations/{i}").json() for i in ids]

    def settled(self, client: httpx.Client, ids: list[str], timeout: float = 60) -> list[dict]:
        """Wait until every conversation is ``completed`` or ``failed``; return their documents."""

        def done() -> list[dict] | None:
            documents = self.conversations(client, ids)
            return documents if all(d["status"] in ("completed", "failed") for d in documents) else None

        # A request per conversation each time: polled faster, the web process takes CPU the worker under test
        # needs (two cores here), and tests that watch the worker's pace see it.
        return wait_until(
            done,
            timeout=timeout,
            interval=0.25,
            message=lambda: f"conversations to settle; logs:\n{self.log_text()}",
        )

    def sql(self, query: str, *params: object) -> list[tuple]:
        """Read the stack's database directly (SQLite or PostgreSQL)."""
        from peewee import SqliteDatabase
        from playhouse.db_url import connect

        url = self.env.get("DATABASE_URL")
        db = connect(url) if url else SqliteDatabase(self.env["DB_PATH"])
        with db:
            cursor = db.execute_sql(query.replace("?", db.param), params)
            return list(cursor.fetchall()) if cursor.description else []  # UPDATE and friends return no rows

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        stop_all(self.processes)

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["REDIS_URL"])


class StackFactory:
    """``factory(**env)`` makes a :class:`Stack` on a flushed Redis database of its own; ``close`` stops all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stacks: list[Stack] = []

    def __call__(self, **env: object) -> Stack:
        logs = self.directory / f"logs-{len(self.stacks)}"
        logs.mkdir()
        base = {"REDIS_URL": fresh_redis_url(), "DB_PATH": str(self.directory / "insights.db"), "DATABASE_URL": ""}
        stack = Stack({**base, **{k: str(v) for k, v in env.items()}}, logs)
        self.stacks.append(stack)
        return stack

    def close(self) -> None:
        """SIGKILL every process of every stack: a test is over, and nothing it left needs a graceful stop
        (graceful stops cost seconds a stack; ``Stack.stop`` and the supervisor's own test keep them tested)."""
        for stack in self.stacks:
            for process in stack.processes:
                if process.poll() is None:
                    stack.kill(process)
                else:
                    kill_group(process.pid)
