"""Configuration: defaults from ``config.toml``, overridden by environment variables.

Every scalar key of ``config.toml`` may be overridden by the environment variable of the same name
in upper case (``batch_size`` -> ``BATCH_SIZE``). A bad value stops start-up with one line naming the
variable and what it expects (:class:`ConfigError`).
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from settings.api_keys import API_SCOPES, parse_api_keys  # noqa: F401 - API_SCOPES re-exported
from settings.secrets import mask_url, redact
from settings.tables import ModelPrice, TaxonomyEntry

INSTALLED_CONFIG = Path("share", "conversation-insights", "config.toml")  # setup.cfg's data_files, under sys.prefix


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``config.toml`` is: ``CONFIG_FILE`` when set; else the checkout's, at the top of the project
    (a source tree or an editable install); else the copy a non-editable install puts under ``sys.prefix``."""
    environ = os.environ if environ is None else environ
    if environ.get("CONFIG_FILE"):
        return Path(environ["CONFIG_FILE"])
    checkout = Path(__file__).resolve().parent.parent / "config.toml"
    return checkout if checkout.is_file() else Path(sys.prefix) / INSTALLED_CONFIG


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message is one line for the operator."""


TABLES = (
    "taxonomy",
    "model_prices",
    "retired_models",
    "model_aliases",
    "pii_patterns",
)  # config.toml tables kept whole (not overridable by the environment)


class Settings(BaseModel):
    """Every setting of the service, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: Annotated[int, Field(gt=0, lt=65536)]
    log_format: Literal["text", "json"]
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    web_limit_concurrency: PositiveInt
    body_timeout_seconds: PositiveFloat
    api_keys: str = Field(repr=False)
    redis_url: str = Field(repr=False)  # may hold a password
    redis_namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]  # prefixes every key and queue
    db_path: str
    database_url: str = Field(repr=False)  # may hold a password
    db_pool_size: PositiveInt
    db_pool_timeout_seconds: PositiveFloat
    grok_api_key: str = Field(repr=False)
    grok_model: str
    grok_reasoning_effort: Literal["", "none", "low", "medium", "high", "xhigh"]  # "": the model's default
    grok_base_url: str
    grok_connect_timeout_seconds: PositiveFloat
    grok_read_timeout_seconds: PositiveFloat
    grok_response_format: Literal["json_schema", "json_object"]
    grok_output_tokens_per_conversation: PositiveInt
    grok_auth_pause_seconds: PositiveFloat
    grok_credits_pause_seconds: PositiveFloat
    grok_cache_routing: bool
    inbound_rps: PositiveInt
    outbound_rps: PositiveInt
    outbound_tpm: PositiveInt | None
    rate_margin_ms: Annotated[int, Field(ge=0, le=1000)]
    worker_processes: PositiveInt
    worker_threads: Annotated[int, Field(ge=0)]
    batch_size: PositiveInt
    max_batch_tokens: PositiveInt
    batch_flush_seconds: PositiveFloat
    max_retries: PositiveInt
    backoff_seconds: PositiveFloat
    lease_seconds: PositiveFloat
    requeue_seconds: PositiveFloat
    reconcile_interval_seconds: PositiveFloat
    bulk_batch_conversations: PositiveInt
    bulk_flush_seconds: PositiveFloat
    bulk_tick_seconds: PositiveFloat
    bulk_poll_seconds: PositiveFloat
    bulk_poll_max_seconds: PositiveFloat
    bulk_give_up_seconds: PositiveFloat
    max_body_bytes: PositiveInt
    max_batch_items: PositiveInt
    max_batch_body_bytes: PositiveInt
    max_messages: PositiveInt
    max_content_chars: PositiveInt
    max_role_chars: PositiveInt
    max_metadata_bytes: PositiveInt
    max_page_size: PositiveInt
    default_page_size: PositiveInt
    summary_top: PositiveInt
    trends_max_buckets: PositiveInt
    trends_top: PositiveInt
    negative_threshold: Annotated[float, Field(ge=-1, le=1)]
    positive_threshold: Annotated[float, Field(ge=-1, le=1)]
    taxonomy_mode: Literal["closed", "open"]
    taxonomy: dict[Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=60)], TaxonomyEntry]
    model_prices: dict[str, ModelPrice]
    retired_models: dict[str, str]  # a retired slug -> the model xAI serves (and bills) it as
    model_aliases: dict[str, str]  # an alias -> the model's own name, as answers give it
    pii_masking: Literal["on", "off"]
    pii_phone_regions: Annotated[str, Field(pattern=r"^\s*[A-Z]{2}(\s*,\s*[A-Z]{2})*\s*$")]
    webhook_rps: PositiveInt
    webhook_timeout_seconds: PositiveFloat
    webhook_retry_schedule: tuple[PositiveFloat, ...]
    webhook_allow_hosts: str
    webhook_ca_file: str
    webhook_max_batch: PositiveInt
    webhook_rotation_overlap_hours: Annotated[float, Field(ge=0)]
    webhook_dispatch_seconds: PositiveFloat
    webhook_lease_seconds: PositiveFloat
    webhook_in_flight: PositiveInt
    webhook_retention_days: PositiveFloat
    pii_patterns: dict[Annotated[str, Field(pattern=r"^[a-z0-9]+([-_][a-z0-9]+)*$", max_length=40)], str]

    @field_validator("taxonomy", mode="before")
    @classmethod
    def _taxonomy(cls, value: Any) -> Any:
        """An entry may be just its keywords (the form before descriptions); "other" is the taxonomy's own."""
        if isinstance(value, dict):
            if "other" in value:
                raise ValueError('"other" is reserved: it is what a conversation that fits no cluster gets')
            return {slug: {"keywords": entry} if isinstance(entry, list) else entry for slug, entry in value.items()}
        return value

    @field_validator("pii_patterns")
    @classmethod
    def _pii_patterns(cls, value: dict[str, str]) -> dict[str, str]:
        """Each pattern compiles and cannot match an empty string (an empty match masks nothing)."""
        for name, pattern in value.items():
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"pattern {name!r} is not a regular expression ({error})") from None
            if compiled.fullmatch(""):
                raise ValueError(f"pattern {name!r} matches an empty string")
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _retry_schedule(cls, value: Any) -> Any:
        """Comma-separated seconds (an empty one: no retries)."""
        return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value

    @field_validator("webhook_ca_file")
    @classmethod
    def _ca_file(cls, value: str) -> str:
        if value and not os.path.isfile(value):
            raise ValueError("expected a PEM file of certificate authorities, or nothing")
        return value

    @property
    def webhook_allowed_hosts(self) -> frozenset[str]:
        """``WEBHOOK_ALLOW_HOSTS``: host names or addresses, without case or IPv6 brackets."""
        return frozenset(h.strip().lower().strip("[]") for h in self.webhook_allow_hosts.split(",") if h.strip())

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("outbound_tpm", mode="before")
    @classmethod
    def _no_token_limit(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("grok_api_key")
    @classmethod
    def _grok_api_key(cls, value: str) -> str:
        """Without the newline a key read from a file ends with; nothing a bearer token cannot hold (a
        newline inside would make ``requests`` refuse the header, quoting it in its error)."""
        key = value.strip()
        if not all("!" <= char <= "~" for char in key):
            raise ValueError("expected printable ASCII without spaces or control characters")
        return key

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @property
    def api_key_scopes(self) -> dict[str, frozenset[str]]:
        """Configured key hashes (hex SHA-256) and the scopes each grants."""
        return parse_api_keys(self.api_keys)

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str) -> str:
        if value and not value.startswith(("postgres://", "postgresql://", "postgres+pool://", "postgresql+pool://")):
            raise ValueError("expected a postgres:// or postgresql:// URL, or nothing for SQLite")
        if value:
            _parsed_url(value)
        return value

    @property
    def limits_storage_url(self) -> str:
        """The same Redis, spelled as the ``limits`` library's async storage wants it."""
        if self.redis_url.startswith("unix://"):
            return "async+redis+unix://" + self.redis_url.removeprefix("unix://")
        return "async+" + self.redis_url

    @property
    def calls_in_flight(self) -> int:
        """Little's law at its worst: Grok calls under way at once when ``OUTBOUND_RPS`` calls a second each
        take the longest a call may take (``GROK_READ_TIMEOUT_SECONDS``). A bound on one process's calls in
        flight that costs nothing until used: the gate, not this, limits the calls."""
        return math.ceil(self.outbound_rps * self.grok_read_timeout_seconds)

    @property
    def offline(self) -> bool:
        """True when no Grok key is configured and the deterministic analyzer runs instead."""
        return not self.grok_api_key

    def redact(self, text: str) -> str:
        """``text`` without the Grok key (see :func:`settings.secrets.redact`)."""
        return redact(text, self.grok_api_key)


HIDDEN_SETTINGS = frozenset({"api_keys", "grok_api_key"})  # a bad value of these is never shown


def _parsed_url(value: str) -> None:
    """Refuse now a URL that would fail only at the first connection (``postgres://u:p@[::1/x``: an
    unclosed IPv6 bracket; a port that is not a number or out of range)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsed on access
    except ValueError as error:
        raise ValueError(f"expected a URL that parses ({error})") from None


def _flatten(table: Mapping[str, Any]) -> dict[str, Any]:
    """Lift the keys of ``[section]`` tables to one level; the ``TABLES`` stay tables."""
    flat: dict[str, Any] = {}
    for section, values in table.items():
        if section in TABLES:
            flat[section] = dict(values)
        else:
            flat.update(values)
    return flat


def load_settings(environ: Mapping[str, str] | None = None, config_file: Path | None = None) -> Settings:
    """Read ``config_file`` (by default :func:`config_path`'s), apply environment overrides and validate;
    raise :class:`ConfigError`."""
    environ = os.environ if environ is None else environ
    config_file = config_file or config_path(environ)
    with open(config_file, "rb") as handle:
        values = _flatten(tomllib.load(handle))
    for key in Settings.model_fields:
        if key not in TABLES and key.upper() in environ:
            values[key] = environ[key.upper()]
    if isinstance(values.get("db_path"), str) and values["db_path"]:
        # Relative to config.toml's folder, not to where a process happens to run: every process (and the
        # CLI run from any folder) finds the same file.
        values["db_path"] = str(config_file.resolve().parent / values["db_path"])
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        source = name.upper() if name.upper() in environ else f"{name} in {config_file.name}"
        expected = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {expected} (got {_shown(name, first.get('input'))})") from None


def _shown(name: str, value: object) -> str:
    """A bad value as a ConfigError shows it: never a key, never a URL's password."""
    if name in HIDDEN_SETTINGS:
        return "(hidden)"
    return repr(mask_url(value) if isinstance(value, str) else value)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def settings_or_exit() -> Settings:
    """The settings, or stop the process with the one-line reason (for process entry points)."""
    try:
        return get_settings()
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None
