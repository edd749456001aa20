"""The settings as a validated model: every setting of the service, its type and its bounds (the values
themselves live in ``config.toml``; :mod:`settings` reads them)."""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from settings.api_keys import parse_api_keys
from settings.secrets import redact
from settings.tables import ModelPrice, TaxonomyEntry

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


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
    bulk_add_max_bytes: Annotated[int, Field(ge=1_048_576)]  # a request of one 1 MiB conversation must fit
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


def _parsed_url(value: str) -> None:
    """Refuse now a URL that would fail only at the first connection (``postgres://u:p@[::1/x``: an
    unclosed IPv6 bracket; a port that is not a number or out of range)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsed on access
    except ValueError as error:
        raise ValueError(f"expected a URL that parses ({error})") from None
