"""The local xAI emulator (``testing/emulator.py``) as the tests run it, a process of its own with its
control API; requests to it, and the real Grok client pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from insights.analyzer import ConversationToAnalyze
from insights.grok import GrokClient
from insights.outbound import OutboundGate
from local.supervisor import stop_all
from settings import load_settings
from support import ROOT, free_port, wait_until

GROK_KEY = "xai-test-key-0123456789abcdef"
MODEL = "grok-4-fast-non-reasoning"


class GrokEmulator:
    """The local xAI stand-in (``testing/emulator.py``) in a process of its own, with its control API."""

    def __init__(self, logs: Path, latency: float = 0.0, args: Sequence[str] = ()) -> None:
        """``args``: more of the emulator's command-line options, e.g. ``["--tpm", "1000"]``."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/_emulator", timeout=10)
        command = [
            sys.executable,
            "-m",
            "testing.emulator",
            "--port",
            str(self.port),
            "--api-key",
            GROK_KEY,
            "--latency",
            str(latency),
            *args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=open(logs / "grok-emulator.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, timeout=30, message="the Grok emulator to start")

    def _answers(self) -> bool:
        try:
            return self.control.get("/log").status_code == 200
        except httpx.TransportError:
            return False

    @property
    def env(self) -> dict[str, str]:
        """Environment that points the service at this emulator."""
        return {"GROK_API_KEY": GROK_KEY, "GROK_BASE_URL": self.base_url}

    def inject(self, *faults: dict) -> None:
        self.control.post("/faults", json=list(faults)).raise_for_status()

    def configure(self, **settings: object) -> None:
        self.control.post("/config", json=settings).raise_for_status()

    def log(self) -> list[dict]:
        return self.control.get("/log").json()

    def stop(self) -> None:
        stop_all([self.process])


def max_calls_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most call arrival times that fall within any span of ``window`` seconds."""
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - start < window) for i, start in enumerate(times)), default=0)


def request_body(*texts: str, model: str = MODEL) -> dict:
    """A chat completion request analyzing ``texts``, as a plain dictionary."""
    conversations = [
        {"conversation_id": f"c{n}", "messages": [{"role": "customer", "content": text}]}
        for n, text in enumerate(texts)
    ]
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "Analyze the conversations."},
            {"role": "user", "content": json.dumps({"conversations": conversations})},
        ],
    }


def make_client(grok: GrokEmulator, gate: OutboundGate, **env: str) -> GrokClient:
    """The real Grok client, in this process, pointed at ``grok``."""
    settings = load_settings({**grok.env, "GROK_READ_TIMEOUT_SECONDS": "2", **env})
    return GrokClient(settings, gate)


def batch(*texts: str) -> list[ConversationToAnalyze]:
    return [ConversationToAnalyze(f"c{n}", [{"role": "customer", "content": text}]) for n, text in enumerate(texts)]
