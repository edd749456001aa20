"""Credentials stay out of what people read: the Grok key out of stored errors and every log line,
passwords out of the URLs shown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support import ROOT, free_port
from support.databases import fresh_redis_url
from support.rows import add, result

from settings.secrets import mask_url, redact
from store import claims, results
from store.models import Conversation

KEY = "xai-Sup3rSecretKey-0123456789"


def test_redact_takes_out_the_key_and_its_prefix_however_spelled():
    key = 'xai-a"b\\c-0123456789'
    text = f"key {key}, prefix {key[:8]}***, as JSON {json.dumps(key)}, as repr {key!r}"
    redacted = redact(text, key)
    assert "0123456789" not in redacted and key[:8] not in redacted and json.dumps(key[:8])[1:-1] not in redacted
    assert redacted.startswith("key ***, prefix ******")
    assert redact("nothing to hide", "") == "nothing to hide"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgres://insights:secret@db:5432/insights", "postgres://insights:***@db:5432/insights"),
        ("postgres://insights:p@ss/w rd@db/insights", "postgres://insights:***@db/insights"),
        (
            "postgresql://db/insights?user=insights&password=secret&sslmode=require",
            "postgresql://db/insights?user=insights&password=***&sslmode=require",
        ),
        ("postgres://insights@db:5432/insights", "postgres://insights@db:5432/insights"),
        ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
    ],
)
def test_mask_url_hides_the_password_only(url, shown):
    assert mask_url(url) == shown


@pytest.fixture
def worker_with_a_key(monkeypatch: pytest.MonkeyPatch):
    """This process set up as a worker whose settings hold a Grok key (undone afterwards)."""
    import dramatiq.broker

    from actors import broker
    from settings import load_settings

    monkeypatch.setattr(broker, "_current", None)
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    broker.setup(load_settings({**os.environ, "GROK_API_KEY": KEY}))
    return broker.settings()


def test_no_stored_error_holds_the_key(db, worker_with_a_key):
    """Whatever words a reason (a failed call's error, a row the analyzer rejected) leaves the key out."""
    from actors import outcomes
    from insights.errors import RateLimited, RequestRefused, TransientError

    echo = f"upstream said: bad header 'Bearer {KEY}' (prefix {KEY[:8]})"
    failures = {"retried": TransientError(echo), "set-aside": RateLimited(echo, 1.0), "refused": RequestRefused(echo)}
    for conversation_id, error in failures.items():
        add(conversation_id)
        claim = claims.claim_for_processing([conversation_id], max_attempts=3)
        batch = outcomes.Batch([conversation_id], f"batch-{conversation_id}", 0, {}, "m", "p")
        outcomes.handle_failure(batch, claim, error)
    add("rejected")
    claim = claims.claim_for_processing(["rejected"], max_attempts=3)
    results.record_results(result(claim, [], {"rejected": echo}), max_retries=3, settings=worker_with_a_key)
    stored = {c.id: c.last_error for c in Conversation.select()}
    assert set(stored) == {*failures, "rejected"} and all(
        "bad header 'Bearer ***'" in text for text in stored.values()
    ), stored
    assert not [text for text in stored.values() if KEY[:8] in text]


LOG_SCRIPT = """
import logging
from telemetry.logs import configure_logging
from settings import load_settings

configure_logging(load_settings())
log = logging.getLogger("leaky")
try:
    raise ValueError("cannot send header 'Bearer %s'" % KEY)
except ValueError:
    log.exception("call failed for %s", KEY, extra={"sent": {"Authorization": "Bearer " + KEY}})
log.warning("Incorrect API key provided: %s***", KEY[:8])
"""


@pytest.mark.processes
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_log_line_holds_the_key_not_even_a_traceback(log_format):
    env = {**os.environ, "GROK_API_KEY": KEY, "LOG_FORMAT": log_format, "PYTHONPATH": str(ROOT)}
    script = f"KEY = {KEY!r}\n{LOG_SCRIPT}"
    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    logged = finished.stderr
    assert "call failed for ***" in logged and "Traceback" in logged and "ValueError: cannot send header" in logged
    assert KEY not in logged and KEY[:8] not in logged, logged


@pytest.mark.processes
def test_scripts_run_shows_the_redis_url_without_its_password(tmp_path):
    url = fresh_redis_url()
    if not url.startswith("redis://"):
        pytest.skip(f"the test Redis is not reached by a redis:// URL ({url})")
    with_password = url.replace("redis://", "redis://:s3cret-Pa55@", 1)
    env = {
        **os.environ,
        "REDIS_URL": with_password,
        "PORT": str(free_port()),
        "DB_PATH": str(tmp_path / "run.db"),
        "dramatiq_prom_port": str(free_port()),
        "dramatiq_prom_db": str(tmp_path),
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.Popen(
        [sys.executable, "-m", "local.supervisor"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    shown = []
    for line in run.stdout:
        shown.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    run.send_signal(signal.SIGTERM)
    shown.append(run.communicate(timeout=60)[0])
    text = "".join(shown)
    assert "Redis:    redis://:***@" in text
    assert "s3cret" not in text
