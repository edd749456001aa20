"""Configuration: config.toml defaults, environment overrides, one-line errors that stop start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import ROOT

from settings import ConfigError, load_settings


def test_defaults_come_from_config_toml():
    settings = load_settings({})
    assert (settings.inbound_rps, settings.outbound_rps, settings.batch_size) == (100, 10, 20)
    assert (settings.batch_flush_seconds, settings.max_retries, settings.backoff_seconds) == (2.0, 5, 1.0)
    assert settings.db_path == str(ROOT / "data" / "conversations.db"), "relative to config.toml, wherever it runs"
    assert settings.grok_base_url == "https://api.x.ai/v1"
    assert settings.offline and settings.redis_namespace == "insights"


def test_environment_overrides():
    settings = load_settings({"BATCH_SIZE": "7", "BATCH_FLUSH_SECONDS": "0.25", "GROK_API_KEY": "secret"})
    assert settings.batch_size == 7 and settings.batch_flush_seconds == 0.25
    assert not settings.offline
    assert "secret" not in repr(settings)


def test_redis_url_spelled_for_limits():
    assert (
        load_settings({"REDIS_URL": "unix:///tmp/r.sock?db=3"}).limits_storage_url
        == "async+redis+unix:///tmp/r.sock?db=3"
    )
    assert load_settings({"REDIS_URL": "redis://h:1/2"}).limits_storage_url == "async+redis://h:1/2"


@pytest.mark.parametrize(
    "name, value",
    [
        ("INBOUND_RPS", "abc"),
        ("BATCH_SIZE", "0"),
        ("BACKOFF_SECONDS", "-1"),
        ("PORT", "70000"),
        ("REDIS_NAMESPACE", ""),
        ("REDIS_NAMESPACE", "team a"),
        ("REDIS_NAMESPACE", "a:b"),
        ("REDIS_NAMESPACE", "x" * 65),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError) as error:
        load_settings({name: value})
    assert str(error.value).startswith(f"{name}: ") and repr(value) in str(error.value)


SECRET = "s3cret-Pa55"
KEY_WITH_A_NEWLINE = "xai-0123456789\nabcdefghijklmnop"


def test_a_key_read_from_a_file_loses_its_newline():
    assert load_settings({"GROK_API_KEY": " xai-0123456789abcdef\n"}).grok_api_key == "xai-0123456789abcdef"
    assert load_settings({"GROK_API_KEY": "\n"}).offline


@pytest.mark.parametrize(
    "key",
    [
        KEY_WITH_A_NEWLINE,
        "xai-0123456789 abcdef",
        "xai-0123456789\tabcdef",
        "xai-0123456789\x00abcdef",
        "xai-0123456789\u00e9abcdef",
        "xai-0123456789\u200babcdef",
    ],
)
def test_a_key_that_cannot_be_a_bearer_token_is_refused_without_being_shown(key):
    with pytest.raises(ConfigError) as error:
        load_settings({"GROK_API_KEY": key})
    message = str(error.value)
    assert message.startswith("GROK_API_KEY: ") and "\n" not in message
    assert "0123456789" not in message and "abcdef" not in message


@pytest.mark.parametrize(
    "name, url",
    [
        ("REDIS_URL", f"http://:{SECRET}@cache.internal:6379/0"),
        ("DATABASE_URL", f"mysql://insights:{SECRET}@db.internal/insights"),
        ("DATABASE_URL", f"mysql://db.internal/insights?user=insights&password={SECRET}"),
    ],
)
def test_a_bad_url_is_shown_without_its_password(name, url):
    with pytest.raises(ConfigError) as error:
        load_settings({name: url})
    message = str(error.value)
    assert message.startswith(f"{name}: ") and SECRET not in message
    assert "***" in message and "internal" in message, "still recognisable"


def test_the_settings_repr_shows_no_secret():
    settings = load_settings(
        {
            "DATABASE_URL": "postgres://u:dbsecret@h/db",
            "REDIS_URL": "redis://:redissecret@h:1/0",
            "GROK_API_KEY": "xai-keysecret",
        }
    )
    assert not [word for word in ("dbsecret", "redissecret", "keysecret") if word in repr(settings)], repr(settings)


@pytest.mark.processes
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "uvicorn", "ingress:app", "--port", "0"],
        [sys.executable, "-m", "actors.launch"],
    ],
)
@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("MAX_RETRIES", "zero", "Input should be a valid integer"),
        ("GROK_API_KEY", KEY_WITH_A_NEWLINE, "expected printable ASCII"),
        ("REDIS_URL", f"http://:{SECRET}@cache.internal:6379/0", "expected a redis://"),
    ],
)
def test_a_bad_value_stops_start_up_with_one_line(command, name, value, expected):
    env = {"PATH": "/usr/bin:/bin", name: value, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode != 0
    [line] = [line for line in finished.stderr.splitlines() if "configuration error" in line]
    assert line.startswith(f"configuration error: {name}: {expected}")
    for secret in (SECRET, "0123456789", "abcdefghijklmnop"):
        assert secret not in finished.stderr + finished.stdout


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://u:{SECRET}@[::1/x",
        f"postgres://u:{SECRET}@db.internal:99999/x",
        f"postgresql://u:{SECRET}@db.internal:port/x",
    ],
)
def test_a_database_url_that_cannot_be_parsed_is_refused_at_start(url):
    """Not at the first connection, as a traceback (``insights stats``) or a web that never gets ready."""
    with pytest.raises(ConfigError) as error:
        load_settings({"DATABASE_URL": url})
    message = str(error.value)
    assert message.startswith("DATABASE_URL: expected a URL that parses (") and "\n" not in message
    assert SECRET not in message


def test_a_key_hash_listed_twice_is_refused_not_merged():
    """Two entries for one hash are a mistake to fix, not scopes to guess at (the last won, silently)."""
    digest = "ab" * 32
    with pytest.raises(ConfigError) as error:
        load_settings({"API_KEYS": f"sha256:{'cd' * 32}:read;sha256:{digest}:ingest; sha256:{digest}:read"})
    assert str(error.value) == (
        "API_KEYS: entry 3 lists a key hash already listed (sha256:abababab...); "
        "give each key one entry with all its scopes (got (hidden))"
    )
