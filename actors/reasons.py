"""Why a batch failed, as operators read it: one current, plain reason.

The conversations' own ``last_error`` is that reason: the analysis step keeps it current on every
transient failure (``Grok rate limit (429) (will retry)``). A dead-lettered Dramatiq message's traceback
is not: it may tell an older try, and its last line starts with an internal class name
(``dramatiq.errors.Retry: ...``); it is read only when no conversation recorded anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from store import queries

WILL_RETRY = " (will retry)"  # how a transient failure's reason ends while retries remain

# "dramatiq.errors.Retry: Grok error 500", "ValueError", "peewee.OperationalError: database is locked"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<name>[A-Z]\w*)(?:: (?P<text>.*))?$")


def plain(traceback: str | None) -> str:
    """A traceback's last line without its exception's class (``module.ClassName: ``)."""
    lines = (traceback or "").strip().splitlines()
    if not lines:
        return "analysis failed (no reason recorded)"
    match = _EXCEPTION_LINE.match(lines[-1])
    if not match:
        return lines[-1]
    return match["text"] or f"analysis failed ({match['name']})"


def current(conversation_ids: Iterable[str], traceback: str | None, open_only: bool = False) -> str:
    """The reason the conversations record (the most common one), without ``(will retry)``; else the
    traceback's, made :func:`plain`."""
    errors = queries.last_errors(conversation_ids, open_only)
    return errors[0].removesuffix(WILL_RETRY) if errors else plain(traceback)
