"""The webhook receiver (``testing/receiver.py``) as the tests run it: a process of its own serving HTTPS
with a certificate from a throwaway certificate authority (trustme), and its control API.

The authority's certificate is written to the test's log folder (:attr:`Receiver.ca_file`), for a worker
process to trust through its settings, as a subscriber's real certificate is trusted through the system's.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import trustme

from local.supervisor import stop_all
from support import ROOT, free_port, wait_until


class Receiver:
    """The webhook receiver in a process of its own, on one port and one certificate for its whole life:
    :meth:`stop` then :meth:`start` plays a subscriber that was down for a while."""

    def __init__(self, logs: Path, args: Sequence[str] = ()) -> None:
        """``args``: more of the receiver's command-line options, e.g. ``["--secret", "whsec_..."]``."""
        self.logs = logs
        self.args = list(args)
        self.port = free_port()
        self.url = f"https://localhost:{self.port}/hook"
        authority = trustme.CA()
        self.ca_file = logs / "receiver-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        issued = authority.issue_cert("localhost", "127.0.0.1")
        self.cert_file, self.key_file = logs / "receiver-cert.pem", logs / "receiver-key.pem"
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(self.key_file))
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        """Run the receiver (again): same port, same certificate, the command line's settings; its records
        start empty."""
        command = [
            sys.executable,
            "-m",
            "testing.receiver",
            "--port",
            str(self.port),
            "--cert",
            str(self.cert_file),
            "--key",
            str(self.key_file),
            *self.args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=open(self.logs / "receiver.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        self.control = httpx.Client(
            base_url=f"https://localhost:{self.port}/_receiver",
            verify=ssl.create_default_context(cafile=self.ca_file),
            timeout=10,
        )
        wait_until(self._answers, timeout=30, message="the webhook receiver to start")

    def _answers(self) -> bool:
        try:
            return self.control.get("/stats").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Stop the receiver; the control client's connection closed first, not to hold up its shutdown."""
        if self.process:
            self.control.close()
            stop_all([self.process])
            self.process = None

    def received(self) -> list[dict[str, Any]]:
        """Every request recorded since the receiver (re)started or was reset (``testing/receiver.py``)."""
        return self.control.get("/received").json()

    def events(self) -> list[dict[str, Any]]:
        """The events of every request recorded, batches flattened, in their order of arrival."""
        return [event for record in self.received() for event in record["events"] or []]

    def stats(self) -> dict[str, Any]:
        return self.control.get("/stats").json()

    def configure(self, **settings: object) -> dict[str, Any]:
        """Change ``mode``, ``latency_ms``, ``fail_rate``, ``seed`` or ``secrets``; the configuration now."""
        answer = self.control.post("/config", json=settings)
        answer.raise_for_status()
        return answer.json()

    def faults(self, *faults: dict[str, Any]) -> None:
        """Queue ``faults``, one for each coming webhook, e.g. ``{"status": 500}``, ``{"delay": 3}``."""
        self.control.post("/faults", json=list(faults)).raise_for_status()

    def reset(self) -> None:
        self.control.post("/reset").raise_for_status()
