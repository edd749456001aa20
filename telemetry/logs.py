"""Logging for every process: readable text by default, JSON lines with ``LOG_FORMAT=json``.

In JSON every record carries its ``extra`` fields (``conversation_ids``, ``batch_id``...) as keys. Nothing
logs the Grok key: it lives only in the Grok client's session headers and in ``Settings`` (hidden from
``repr``), and error bodies that echo it are masked before they are logged or stored. As a last line of
defence every formatted record, traceback included (Dramatiq logs those itself), is redacted of the key.
"""

from __future__ import annotations

import logging
import threading
import time

from pythonjsonlogger.json import JsonFormatter

from settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d %(name)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(threadName)s %(message)s"


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then takes the Grok key out of the whole text."""

    def __init__(self, inner: logging.Formatter, settings: Settings) -> None:
        super().__init__()
        self.inner = inner
        self.settings = settings

    def format(self, record: logging.LogRecord) -> str:
        text = self.settings.redact(self.inner.format(record))
        if record.exc_text:  # the traceback cached on the record, for any other handler formatting it
            record.exc_text = self.settings.redact(record.exc_text)
        return text


def formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        inner: logging.Formatter = JsonFormatter(
            JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}
        )
    else:
        inner = logging.Formatter(TEXT_FORMAT)
    return RedactingFormatter(inner, settings)


def configure_logging(settings: Settings) -> None:
    """Give the root logger (and whatever handlers the server set up, uvicorn's or Dramatiq's) our format,
    which redacts the Grok key."""
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    for chatty in ("httpx", "httpcore"):  # a line per Grok call, thousands a minute: our own lines say what matters
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    loggers = [root, *(logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access"))]
    for handler in (h for logger in loggers for h in logger.handlers):
        handler.setFormatter(formatter(settings))


class Throttle:
    """At most one log line per ``seconds`` for an event that may recur by the thousand (a flood of one
    warning would drown the rest); the events held back are counted into the next line."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.next_line = 0.0
        self.held = 0
        self.lock = threading.Lock()

    def due(self, events: int) -> int:
        """Record ``events``; return how many (these and those held back) to report now, or 0 to stay quiet."""
        with self.lock:
            self.held += events
            now = time.monotonic()
            if now < self.next_line:
                return 0
            self.next_line, reported, self.held = now + self.seconds, self.held, 0
            return reported
