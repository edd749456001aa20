"""Helpers for the tests, one module a concept; conftest keeps the fixtures and hooks, and no test module
imports another (``tests/test_test_modules.py`` keeps it so).

- here: where the project and its installed scripts are, free ports, waiting on a condition;
- ``databases``: the test Redis (its databases 8 to 15) and the PostgreSQL scratch database;
- ``stack``: web and worker processes of the real service; ``traffic``: what tests send them and read back;
- ``cli``: the ``insights`` command as a subprocess; ``grok``: the xAI emulator in a process of its own;
- ``receiver``: the webhook receiver in a process of its own, over HTTPS with a throwaway authority;
- ``proxy``: a TCP proxy that plays network faults; ``metrics``: Prometheus expositions;
- ``rows`` and ``history``: conversations and analyses written through the store, in process.
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

BIN = Path(sys.executable).parent
"""The folder of the interpreter running the tests, where its environment installed the console scripts."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(
    predicate, timeout: float = 30.0, interval: float = 0.05, message: str | Callable[[], str] = "condition"
):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds, saying
    ``message`` (called then, when it is a function: logs as they are at the end, not at the start)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message() if callable(message) else message}")
        time.sleep(interval)
