"""What the webhook benchmark drives: the receiver test double over HTTPS (a certificate from a throwaway
trustme authority that the worker trusts through ``WEBHOOK_CA_FILE``), the store opened in this process to
make subscriptions and fill the outbox, and the figures read from the receiver's records.

trustme is a test extra, imported only when a receiver is started: benchmarks run from the dev checkout.
"""

from __future__ import annotations

import json
import math
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psutil

from benchmarks.harness import START_TIMEOUT_SECONDS, Run
from settings import load_settings
from store import outbox, subscriptions
from store.db import open_database, release, write_transaction
from store.migrations import migrate
from store.models import database
from store.queries import utcnow
from webhooks import events, signing


class Receiver:
    """``testing.receiver`` in a process of the run, serving HTTPS on ``port`` for the name ``localhost``."""

    def __init__(self, run: Run, port: int, *options: str) -> None:
        import trustme  # a test extra

        authority, folder = trustme.CA(), run.directory
        self.ca_file, cert, key = folder / "receiver-ca.pem", folder / "receiver-cert.pem", folder / "receiver-key.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        issued = authority.issue_cert("localhost", "127.0.0.1")
        cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        command = [sys.executable, "-m", "testing.receiver", "--port", str(port), "--cert", str(cert)]
        command += ["--key", str(key), "--record-limit", "0", *options]
        self.process = run.start(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.psutil = psutil.Process(self.process.pid)
        self.url = f"https://localhost:{port}/hook"
        self.control = httpx.Client(
            base_url=f"https://localhost:{port}/_receiver",
            verify=ssl.create_default_context(cafile=self.ca_file),
            timeout=60,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                self.stats()
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the webhook receiver did not start")

    def received(self) -> list[dict[str, Any]]:
        return self.control.get("/received").json()

    def stats(self) -> dict[str, Any]:
        return self.control.get("/stats").json()

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()


def open_store(env: dict[str, str]) -> None:
    """Bind the models in this process to the run's database (``env``'s) and migrate it."""
    migrate(open_database(load_settings(env)))


def sql(statement: str, *params: object) -> list[tuple]:
    """Rows of ``statement`` (placeholders ``?``, rewritten for PostgreSQL), the connection released after."""
    if "Postgres" in type(database.obj).__name__:
        statement = statement.replace("?", "%s")
    try:
        return database.obj.execute_sql(statement, params).fetchall()
    finally:
        release()


def subscribe(url: str, batch_size: int) -> str:
    """A subscription to ``conversation.completed`` made straight in the store; its id."""
    try:
        return subscriptions.create(url, [events.COMPLETED], batch_size, signing.new_secret()).id
    finally:
        release()


def fill_outbox(count: int, chunk: int = 2000) -> None:
    """``count`` pending ``conversation.completed`` deliveries for every subscription that wants them,
    written as the result writer does (``store.outbox.completed_events`` in a write transaction)."""
    now = utcnow()
    for start in range(0, count, chunk):
        insights = [insight(n, now) for n in range(start, min(count, start + chunk))]
        with write_transaction(database.obj):
            outbox.completed_events(insights, now)
        release()


def insight(n: int, now: datetime) -> dict[str, Any]:
    """The n-th insight as ``store.results`` passes it to the outbox."""
    return {
        "conversation_id": f"conv_{n:08d}",
        "occurred_at": now - timedelta(minutes=5),
        "sentiment_score": -0.4,
        "clusters": json.dumps(["late-delivery", "damaged-item"]),
        "suggested_cluster": None,
        "confidence": 0.82,
        "reasoning": "The customer reports a late parcel that arrived damaged; the agent sends a replacement.",
        "model": "offline-vader",
        "prompt_version": "v3",
        "analyzed_at": now,
    }


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def first_accepted(records: list[dict[str, Any]]) -> dict[str, tuple[float, dict, bool]]:
    """For each event id: when it was first answered 2xx, the event, and whether that was its first request."""
    seen: set[str] = set()
    found: dict[str, tuple[float, dict, bool]] = {}
    for record in sorted(records, key=lambda record: record["t"]):
        for event in record["events"] or []:
            ident = event["data"]["event_id"]
            if 200 <= record["status"] < 300 and not record.get("client_gone") and ident not in found:
                found[ident] = (record["t"], event, ident not in seen)
            seen.add(ident)
    return found


def percentile(values: list[float], share: float) -> float:
    """Nearest rank of the sorted ``values`` (``math.inf`` stands for an event never delivered)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def seconds(value: float) -> str:
    return "not delivered" if math.isinf(value) else f"{value:.2f} s"


def median_of(rows: list[dict[str, float]], key: str) -> float:
    ordered = sorted(row[key] for row in rows)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
