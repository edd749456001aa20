"""Configuration: defaults from ``config.toml``, overridden by environment variables.

Every scalar key of ``config.toml`` may be overridden by the environment variable of the same name
in upper case (``batch_size`` -> ``BATCH_SIZE``). A bad value stops start-up with one line naming the
variable and what it expects (:class:`ConfigError`).
"""

from __future__ import annotations

import functools
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from settings.api_keys import API_SCOPES  # noqa: F401 - re-exported
from settings.model import Settings
from settings.secrets import mask_url

INSTALLED_CONFIG = Path("share", "conversation-insights", "config.toml")  # setup.cfg's data_files, under sys.prefix


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``config.toml`` is: ``CONFIG_FILE`` when set; else the checkout's, at the top of the project
    (a source tree or an editable install); else the copy a non-editable install puts under ``sys.prefix``."""
    environ = os.environ if environ is None else environ
    if environ.get("CONFIG_FILE"):
        return Path(environ["CONFIG_FILE"])
    checkout = Path(__file__).resolve().parent.parent / "config.toml"
    return checkout if checkout.is_file() else Path(sys.prefix) / INSTALLED_CONFIG


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message is one line for the operator."""


TABLES = (
    "taxonomy",
    "model_prices",
    "retired_models",
    "model_aliases",
    "pii_patterns",
)  # config.toml tables kept whole (not overridable by the environment)


HIDDEN_SETTINGS = frozenset({"api_keys", "grok_api_key"})  # a bad value of these is never shown


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
