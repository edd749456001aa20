"""Credentials stay out of what people read: passwords out of the URLs shown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, free_port, fresh_redis_url
from insights.secrets import mask_url


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgres://insights:secret@db:5432/insights", "postgres://insights:***@db:5432/insights"),
    ("postgres://insights:p@ss/w rd@db/insights", "postgres://insights:***@db/insights"),
    ("postgresql://db/insights?user=insights&password=secret&sslmode=require",
     "postgresql://db/insights?user=insights&password=***&sslmode=require"),
    ("postgres://insights@db:5432/insights", "postgres://insights@db:5432/insights"),
    ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
])
def test_mask_url_hides_the_password_only(url, shown):
    assert mask_url(url) == shown


def test_scripts_run_shows_the_redis_url_without_its_password(tmp_path):
    url = fresh_redis_url()
    if not url.startswith("redis://"):
        pytest.skip(f"the test Redis is not reached by a redis:// URL ({url})")
    with_password = url.replace("redis://", "redis://:s3cret-Pa55@", 1)
    env = {**os.environ, "REDIS_URL": with_password, "PORT": str(free_port()), "DB_PATH": str(tmp_path / "run.db"),
           "dramatiq_prom_port": str(free_port()), "dramatiq_prom_db": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = subprocess.Popen([sys.executable, "-m", "ops.supervisor"], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
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
