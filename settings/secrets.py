"""Keeping credentials out of what people read: the Grok key out of stored and logged text, passwords
out of the URLs that messages show.

Pure functions of their arguments (no settings imported here), so ``settings`` itself can use them.
"""

from __future__ import annotations

import json
import re

MASK = "***"
PREFIX_CHARS = 8  # error bodies quote a key in part ("Incorrect API key provided: xai-abcd***")

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*):.*@")
_PASSWORD_PARAMETER = re.compile(r"(?P<head>[?&]password=)[^&\s]*", re.IGNORECASE)


def redact(text: str, key: str) -> str:
    """``text`` with ``key`` and its first characters replaced by ``***``, however the text spells them:
    as is, as JSON spells them (a JSON log line) or as ``repr`` does (a traceback quoting a value)."""
    if not key:
        return text
    for secret in (key, key[:PREFIX_CHARS]):
        for spelling in (secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]):
            text = text.replace(spelling, MASK)
    return text


def mask_url(text: str) -> str:
    """``text`` (a URL, or a line showing one) with the URL's password masked: ``redis://:***@host``,
    ``postgres://user:***@host/db``, ``...?password=***``. The user name stays: it says which account.

    Everything up to the line's last ``@`` counts as the password, since a bad value may hold an ``@``,
    a ``/`` or a space unescaped: masking too much is harmless, too little is not."""
    text = _URL_PASSWORD.sub(lambda match: f"{match['head']}:{MASK}@", text)
    return _PASSWORD_PARAMETER.sub(lambda match: f"{match['head']}{MASK}", text)
