"""Logging for every process: readable text by default, JSON lines with ``LOG_FORMAT=json``.

In JSON every record carries its ``extra`` fields (``conversation_ids``, ``batch_id``...) as keys. Nothing
logs the Grok key: it lives only in the Grok client's session headers and in ``Settings`` (hidden from
``repr``), and error bodies that echo it are masked before they are logged or stored.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(threadName)s %(message)s"


def formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Settings) -> None:
    """Give the root logger (and whatever handlers the server set up, uvicorn's or Dramatiq's) our format."""
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    loggers = [root, *(logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access"))]
    for handler in (h for logger in loggers for h in logger.handlers):
        handler.setFormatter(formatter(settings))
